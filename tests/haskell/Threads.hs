-- Several labelled threads that pass work around through MVars.
--
-- Each worker takes numbers from a shared inbox, sums their squares and puts
-- its total into its own outbox; main labels every thread, feeds the inbox,
-- then collects the totals.  Labels are "worker-N"; main is "main-thread ✓".
module Main (main) where

import Control.Concurrent
import Control.Monad (forM, forM_, replicateM_)
import GHC.Conc (labelThread)

workers :: Int
workers = 4

worker :: MVar (Maybe Int) -> MVar Int -> Int -> IO ()
worker inbox outbox acc = do
  job <- takeMVar inbox
  case job of
    Nothing -> putMVar outbox acc
    Just n -> do
      let acc' = acc + n * n
      acc' `seq` yield
      worker inbox outbox acc'

main :: IO ()
main = do
  self <- myThreadId
  labelThread self "main-thread ✓"
  inbox <- newEmptyMVar
  outboxes <- forM [1 .. workers] $ \i -> do
    outbox <- newEmptyMVar
    tid <- forkIO (worker inbox outbox 0)
    labelThread tid ("worker-" ++ show i)
    return outbox
  forM_ [1 .. 2000] $ \n -> putMVar inbox (Just n)
  replicateM_ workers (putMVar inbox Nothing)
  totals <- mapM takeMVar outboxes
  print (sum totals)
