-- The program behind ghc-threads.eventlog: ghc -O -threaded -eventlog -rtsopts, run with +RTS -l -N2 (GHC 9.0.2).
import Control.Concurrent
import Debug.Trace
main :: IO ()
main = do
  mv <- newEmptyMVar
  _ <- forkIO $ do { traceEventIO "hello"; traceMarkerIO "mk"; putMVar mv () }
  takeMVar mv
  traceEventIO "héllo"
