{-# LANGUAGE BangPatterns #-}
{-# LANGUAGE MagicHash #-}
-- | The ghc-events side of bench/reader_throughput.py: decode a whole
-- eventlog with the ghc-events library and count its events per constructor.
--
-- Usage: GhcEventsCount (whole|incremental) FILE [CHUNK_BYTES]
--
-- whole:        GHC.RTS.Events.readEventLogFromFile, then a strict left fold
--               over the event list.
-- incremental:  GHC.RTS.Events.Incremental.decodeEventLog, fed strict chunks
--               of CHUNK_BYTES (default 1 MiB) read with hGetSome.
--
-- Every event is forced: its timestamp and capability go into checksums and
-- its EventInfo is evaluated to find its constructor (which forces the strict
-- and unpacked fields the decoder filled in).  Output, one fact a line:
--
--   type NAME COUNT     per constructor (UnknownEvent#ID for unknown ids)
--   total N
--   ts_sum N            sum of timestamps modulo 2^64
--   cap_sum N           sum of (capability + 1), 0 for none
--   decode_ns N         monotonic time from before opening the file to the end
--
-- ghc-events consumes block markers while decoding, so they are not counted.
module Main (main) where

import qualified Data.ByteString as B
import qualified Data.IntMap.Strict as IM
import Data.List (foldl', sortOn)
import Data.Word (Word64)
import GHC.Clock (getMonotonicTimeNSec)
import GHC.Exts (Int (I#), dataToTag#)
import GHC.RTS.Events
import GHC.RTS.Events.Incremental (Decoder (..), decodeEventLog)
import System.Environment (getArgs)
import System.Exit (exitFailure)
import System.IO

-- | A count and one example of the constructor, kept to print its name.
data Seen = Seen !Int EventInfo

data Tally = Tally
  { tSeen :: !(IM.IntMap Seen)
  , tTotal :: !Int
  , tTs :: !Word64
  , tCap :: !Int
  }

emptyTally :: Tally
emptyTally = Tally IM.empty 0 0 0

-- | Constructor index, spread so that unknown ids get keys of their own.
keyOf :: EventInfo -> Int
keyOf info = case info of
  UnknownEvent {ref = r} -> tag * 0x10000 + fromIntegral r
  _ -> tag * 0x10000
  where
    !tag = I# (dataToTag# info)

add :: Tally -> Event -> Tally
add (Tally seen total ts caps) ev =
  let !info = evSpec ev
      !k = keyOf info
      !c = maybe 0 (+ 1) (evCap ev)
      bump _ (Seen n x) = Seen (n + 1) x
   in Tally (IM.insertWith bump k (Seen 1 info) seen) (total + 1) (ts + evTime ev) (caps + c)

nameOf :: EventInfo -> String
nameOf info = case info of
  UnknownEvent {ref = r} -> "UnknownEvent#" ++ show r
  _ -> takeWhile (/= ' ') (show info)

report :: Tally -> Word64 -> IO ()
report (Tally seen total ts caps) ns = do
  let rows = sortOn fst [(nameOf x, n) | Seen n x <- IM.elems seen]
  mapM_ (\(name, n) -> putStrLn ("type " ++ name ++ " " ++ show n)) rows
  putStrLn ("total " ++ show total)
  putStrLn ("ts_sum " ++ show ts)
  putStrLn ("cap_sum " ++ show caps)
  putStrLn ("decode_ns " ++ show ns)

whole :: FilePath -> IO Tally
whole path = do
  got <- readEventLogFromFile path
  case got of
    Left err -> die' err
    Right (EventLog _ (Data evs)) -> return $! foldl' add emptyTally evs

incremental :: Int -> FilePath -> IO Tally
incremental chunk path = withBinaryFile path ReadMode $ \h ->
  let go !acc dec = case dec of
        Produce ev dec' -> go (add acc ev) dec'
        Consume k -> do
          bytes <- B.hGetSome h chunk
          if B.null bytes then return acc else go acc (k bytes)
        Done _ -> return acc
        Error _ err -> die' err
   in go emptyTally decodeEventLog

die' :: String -> IO a
die' err = hPutStrLn stderr ("GhcEventsCount: " ++ err) >> exitFailure

main :: IO ()
main = do
  args <- getArgs
  (run, path) <- case args of
    ["whole", p] -> return (whole, p)
    ["incremental", p] -> return (incremental 1048576, p)
    ["incremental", p, n] -> return (incremental (read n), p)
    _ -> die' "usage: GhcEventsCount (whole|incremental) FILE [CHUNK_BYTES]"
  t0 <- getMonotonicTimeNSec
  tally <- run path
  t1 <- tally `seq` getMonotonicTimeNSec
  report tally (t1 - t0)
