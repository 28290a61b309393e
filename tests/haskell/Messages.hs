{-# LANGUAGE MagicHash #-}
{-# LANGUAGE UnboxedTuples #-}
-- User messages, markers and binary messages.
--
-- Usage: Messages MODE [ARG ...]   (extra arguments are only carried along
-- so that the ProgramArgs event has something to show)
--
-- Every text message starts with "lpmtest " so tests can pick them out of
-- `ghc-events show` output.  base-4.15 has no traceBinaryEvent, so binary
-- messages call the primop on a buffer from allocaBytes.  The first binary
-- message depends on MODE:
--
--   all-bytes   the byte values 0..255, then the UTF-8 bytes of "✓"
--   printable   the byte values 0..127, then the UTF-8 bytes of "é"
--
-- The second is empty.  `ghc-events show` prints a binary message by mapping
-- unprintable Latin-1 characters to '.' and decoding the result as UTF-8, so
-- it stops with an error on the all-bytes form; the printable form survives.
module Main (main) where

import Control.Monad (forM_)
import Data.Word (Word8)
import Debug.Trace (traceEventIO, traceMarkerIO)
import Foreign.Marshal.Alloc (allocaBytes)
import Foreign.Storable (pokeByteOff)
import GHC.Exts (Int (..), traceBinaryEvent#)
import GHC.IO (IO (..))
import GHC.Ptr (Ptr (..))
import System.Environment (getArgs)
import System.Exit (die)

binaryPayload :: String -> Maybe [Word8]
binaryPayload mode = case mode of
  "all-bytes" -> Just ([0 .. 255] ++ [0xe2, 0x9c, 0x93])
  "printable" -> Just ([0 .. 127] ++ [0xc3, 0xa9])
  _ -> Nothing

traceBinaryIO :: [Word8] -> IO ()
traceBinaryIO bytes =
  allocaBytes (max 1 len) $ \ptr -> do
    forM_ (zip [0 ..] bytes) $ \(i, b) -> pokeByteOff ptr i b
    case (ptr, len) of
      (Ptr addr, I# n) -> IO (\s -> case traceBinaryEvent# addr n s of s' -> (# s', () #))
  where
    len = length bytes

main :: IO ()
main = do
  args <- getArgs
  payload <- case args of
    (mode : _) | Just p <- binaryPayload mode -> return p
    _ -> die "usage: Messages all-bytes|printable [ARG ...]"
  traceMarkerIO "lpmtest begin"
  traceEventIO "lpmtest héllo wörld ✓"
  forM_ [1 .. 5 :: Int] $ \i -> traceEventIO ("lpmtest step " ++ show i)
  traceBinaryIO payload
  traceBinaryIO []
  traceEventIO "lpmtest tab\tand 日本語 \x1F40D"
  traceMarkerIO "lpmtest end ✓"
