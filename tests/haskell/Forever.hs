-- Writes user messages and allocates until it is killed.
--
-- Each message is about 70 bytes, so the 2 MiB capability buffer fills and is
-- written to the eventlog file every few tens of thousands of iterations.  The
-- loop gives up by itself after a bound so a test that never kills it still
-- ends.
module Main (main) where

import Control.Monad (forM_)
import Debug.Trace (traceEventIO)
import Data.IORef

main :: IO ()
main = do
  total <- newIORef (0 :: Int)
  forM_ [1 .. 1000000 :: Int] $ \i -> do
    traceEventIO ("lpmtest tick " ++ show i ++ " of a program that is about to be killed")
    modifyIORef' total (+ length (show i))
  readIORef total >>= print
