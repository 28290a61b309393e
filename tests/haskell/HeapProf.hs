-- A growing, then shrinking, heap for the closure-type heap profile (-hT).
--
-- Run with +RTS -hT -i0 so a census is taken at every major collection; the
-- program forces a few major collections while it holds different data.
module Main (main) where

import Control.Monad (forM_)
import Data.IORef
import qualified Data.Map.Strict as Map
import System.Mem (performMajorGC)

main :: IO ()
main = do
  keep <- newIORef (Map.empty :: Map.Map Int [Int])
  forM_ [1 .. 6 :: Int] $ \step -> do
    modifyIORef' keep (Map.insert step [step .. step * 3000])
    m <- readIORef keep
    print (sum (map length (Map.elems m)))
    performMajorGC
  writeIORef keep Map.empty
  performMajorGC
