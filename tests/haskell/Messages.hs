{-# LANGUAGE MagicHash #-}
{-# LANGUAGE UnboxedTuples #-}
-- User messages, markers and binary messages.
--
-- Every text message starts with "lpmtest " so tests can pick them out of
-- `ghc-events show` output.  The binary message is the 256 byte values 0..255
-- followed by the UTF-8 bytes of "✓"; base-4.15 has no traceBinaryEvent, so
-- the primop is called on a buffer from allocaBytes.
module Main (main) where

import Control.Monad (forM_)
import Data.Word (Word8)
import Debug.Trace (traceEventIO, traceMarkerIO)
import Foreign.Marshal.Alloc (allocaBytes)
import GHC.Ptr (Ptr (..))
import Foreign.Storable (pokeByteOff)
import GHC.Exts (Int (..), traceBinaryEvent#)
import GHC.IO (IO (..))

binaryPayload :: [Word8]
binaryPayload = [0 .. 255] ++ [0xe2, 0x9c, 0x93]

traceBinaryIO :: [Word8] -> IO ()
traceBinaryIO bytes =
  allocaBytes len $ \ptr -> do
    forM_ (zip [0 ..] bytes) $ \(i, b) -> pokeByteOff ptr i b
    case (ptr, len) of
      (Ptr addr, I# n) -> IO (\s -> case traceBinaryEvent# addr n s of s' -> (# s', () #))
  where
    len = length bytes

main :: IO ()
main = do
  traceMarkerIO "lpmtest begin"
  traceEventIO "lpmtest héllo wörld ✓"
  forM_ [1 .. 5 :: Int] $ \i -> traceEventIO ("lpmtest step " ++ show i)
  traceBinaryIO binaryPayload
  traceBinaryIO []
  traceEventIO "lpmtest tab\tand 日本語 \x1F40D"
  traceMarkerIO "lpmtest end ✓"
