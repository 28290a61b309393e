{-# LANGUAGE BangPatterns #-}
-- | Workload for bench/reader_throughput.py: a program whose only purpose is
-- to make its GHC runtime write a large and varied eventlog.
--
-- Usage: EventStorm LOGFILE TARGET_BYTES +RTS -l -olLOGFILE -N2 -RTS
--
-- It runs rounds until LOGFILE (the eventlog the runtime is writing) has
-- grown to TARGET_BYTES.  A round forks a ring of labelled threads that pass
-- a token through MVars (thread create/run/stop/wakeup/migrate events on two
-- capabilities), lets each of them allocate short-lived data (GC events,
-- parallel GC with -N2, heap statistics), spark a little pure work (spark
-- counters), and write user messages of varying length with traceEventIO.
-- Every round begins with a traceMarkerIO marker.  TARGET_BYTES 0 runs no
-- round at all: the log then holds only what the runtime writes by itself,
-- which makes a tiny file for measuring a reader's start-up cost.
module Main (main) where

import Control.Concurrent (forkIO, yield)
import Control.Concurrent.MVar
import Control.Exception (evaluate)
import Control.Monad (forM, forM_, when)
import Data.List (foldl')
import Debug.Trace (traceEventIO, traceMarkerIO)
import GHC.Conc (labelThread, myThreadId, par, pseq)
import System.Environment (getArgs)
import System.Exit (exitFailure)
import System.IO

ringSize :: Int
ringSize = 6

-- | Token passes per thread and round.
laps :: Int
laps = 40

main :: IO ()
main = do
  args <- getArgs
  case args of
    [logFile, target] -> do
      me <- myThreadId
      labelThread me "storm-main"
      rounds <- storm logFile (read target) 0
      hPutStrLn stderr ("EventStorm: " ++ show rounds ++ " rounds")
    _ -> do
      hPutStrLn stderr "usage: EventStorm LOGFILE TARGET_BYTES +RTS -l -olLOGFILE -N2 -RTS"
      exitFailure

storm :: FilePath -> Integer -> Int -> IO Int
storm logFile target = go
  where
    go !r = do
      size <- logSize logFile
      if size >= target
        then return r
        else runRound r >> go (r + 1)

logSize :: FilePath -> IO Integer
logSize path = withFile path ReadMode hFileSize

runRound :: Int -> IO ()
runRound r = do
  traceMarkerIO ("round " ++ show r)
  slots <- forM [0 .. ringSize - 1] (const newEmptyMVar)
  dones <- forM [0 .. ringSize - 1] (const newEmptyMVar)
  let next i = slots !! ((i + 1) `mod` ringSize)
  forM_ (zip3 [0 ..] slots dones) $ \(i, inbox, done) -> do
    tid <- forkIO (member r i inbox (next i) done)
    labelThread tid ("ring-" ++ show r ++ "-" ++ show i)
  putMVar (head slots) (0 :: Int)
  results <- mapM takeMVar dones
  when (r `mod` 16 == 0) $
    traceEventIO ("round " ++ show r ++ " checksum " ++ show (sum results))

-- | One member of the ring: take the token, do a little work, pass it on.
member :: Int -> Int -> MVar Int -> MVar Int -> MVar Int -> IO ()
member r i inbox outbox done = loop 0 0
  where
    loop :: Int -> Int -> IO ()
    loop !lap !acc
      | lap == laps = do
          -- The ring's last lap: thread 0 swallows the final token.
          when (i == 0) $ takeMVar inbox >>= \_ -> return ()
          putMVar done acc
      | otherwise = do
          token <- takeMVar inbox
          v <- evaluate (work (r + i + lap + token))
          when (lap `mod` 3 == i `mod` 3) $
            traceEventIO (message r i lap v)
          when (lap `mod` 7 == 0) yield
          putMVar outbox (token + 1)
          loop (lap + 1) (acc + v)

-- | Allocating pure work; half of it sparked so the spark counters move.
work :: Int -> Int
work seed = left `par` (right `pseq` (left + right))
  where
    n = 200 + seed `mod` 300
    left = foldl' (+) 0 (map (\x -> x * x `mod` 7919) [seed .. seed + n])
    right = length (show (product (map toInteger [1 .. 20 + seed `mod` 40])))

message :: Int -> Int -> Int -> Int -> String
message r i lap v =
  "ring " ++ show r ++ "/" ++ show i ++ " lap " ++ show lap ++ " value " ++ show v
    ++ replicate ((r * 7 + i * 13 + lap) `mod` 48) '.'
