-- Count the events of an eventlog per ghc-events constructor.
--
-- Usage: EventCounts FILE
--
-- Prints "header_types N" (the number of event types the header declares),
-- then one line "NAME COUNT" per constructor, sorted by name.  NAME is the
-- first word of the constructor's Show output, or "Unknown:ID" for an event
-- type the header declares but ghc-events has no parser for.  Block markers
-- never appear: ghc-events consumes them while framing.
--
-- Exits 1 with the error on stderr when ghc-events cannot read the file.
-- readEventLogFromFile is not used on purpose: it is `fst` of readEventLog,
-- so it throws away an error met after the header and returns the events
-- decoded before it as if the file ended there.  An input that merely stops
-- (a killed program) is not an error for ghc-events, and not for this tool.
module Main (main) where

import qualified Data.ByteString.Lazy as BL
import qualified Data.Map.Strict as Map
import GHC.RTS.Events
import GHC.RTS.Events.Incremental (readEventLog)
import System.Environment (getArgs)
import System.Exit (exitFailure)
import System.IO (hPutStrLn, stderr)

constructorName :: EventInfo -> String
constructorName spec = case spec of
  UnknownEvent r -> "Unknown:" ++ show r
  other -> takeWhile (/= ' ') (show other)

failWith :: String -> IO a
failWith msg = hPutStrLn stderr ("EventCounts: " ++ msg) >> exitFailure

main :: IO ()
main = do
  args <- getArgs
  path <- case args of
    [p] -> return p
    _ -> failWith "usage: EventCounts FILE"
  bytes <- BL.readFile path
  case readEventLog bytes of
    Left err -> failWith (path ++ ": header: " ++ err)
    Right (_, Just err) -> failWith (path ++ ": events: " ++ err)
    Right (EventLog hdr (Data evs), Nothing) -> do
      let tally = Map.fromListWith (+) [(constructorName (evSpec e), 1 :: Int) | e <- evs]
      putStrLn ("header_types " ++ show (length (eventTypes hdr)))
      mapM_ (\(name, n) -> putStrLn (name ++ " " ++ show n)) (Map.toList tally)
