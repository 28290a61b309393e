-- Allocation-heavy work on two capabilities, so the parallel collector runs.
--
-- Two threads each build and fold large lists and maps; keeping part of each
-- map alive between rounds gives the collector live data to copy in parallel.
module Main (main) where

import Control.Concurrent
import Control.Monad (forM, forM_)
import qualified Data.Map.Strict as Map
import System.Mem (performMajorGC)

churn :: Int -> Int -> Int
churn seed rounds = go rounds Map.empty 0
  where
    go :: Int -> Map.Map Int Int -> Int -> Int
    go 0 m acc = acc + Map.size m
    go r m acc =
      let base = seed * 100000 + r * 1000
          m' = foldr (\k -> Map.insert (k `mod` 20000) (k * r)) m [base .. base + 20000]
          acc' = acc + Map.foldl' (+) 0 m' `mod` 1000003
       in acc' `seq` go (r - 1) m' acc'

main :: IO ()
main = do
  dones <- forM [1, 2 :: Int] $ \i -> do
    done <- newEmptyMVar
    _ <- forkOn (i - 1) (putMVar done $! churn i 25)
    return done
  results <- mapM takeMVar dones
  performMajorGC
  forM_ results print
