-- Several labelled threads that pass work around through MVars.
--
-- Each worker takes numbers from a shared inbox, sums their squares and puts
-- its total into its own outbox; main labels every thread, feeds the inbox,
-- then collects the totals.  Labels are "worker-N"; main is "main-thread ✓".
--
-- Then main throws to a thread ("masked") that sits in uninterruptibleMask_,
-- so main blocks in throwTo (STOP_THREAD status 18, BlockedOnMsgThrowTo) until
-- a helper sees main blocked and lets the masked thread go.
module Main (main) where

import Control.Concurrent
import Control.Exception (AsyncException (ThreadKilled), throwTo, uninterruptibleMask_)
import Control.Monad (forM, forM_, replicateM_, unless)
import GHC.Conc (BlockReason (BlockedOnException), ThreadStatus (ThreadBlocked), labelThread, threadStatus)

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

-- Let the masked thread leave its mask once main is blocked throwing to it.
releaseWhenBlocked :: ThreadId -> MVar () -> IO ()
releaseWhenBlocked target gate = do
  status <- threadStatus target
  unless (status == ThreadBlocked BlockedOnException) $ do
    yield
    releaseWhenBlocked target gate
  putMVar gate ()

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

  ready <- newEmptyMVar
  gate <- newEmptyMVar
  masked <- forkIO (uninterruptibleMask_ (putMVar ready () >> takeMVar gate))
  labelThread masked "masked"
  takeMVar ready
  helper <- forkIO (releaseWhenBlocked self gate)
  labelThread helper "helper"
  throwTo masked ThreadKilled
  putStrLn "thrown"
