-- Count the events of an eventlog per ghc-events constructor.
--
-- Usage: EventCounts FILE
--
-- Prints "header_types N" (the number of event types the header declares),
-- then one line "NAME COUNT" per constructor, sorted by name.  NAME is the
-- first word of the constructor's Show output, or "Unknown:ID" for an event
-- type the header declares but ghc-events cannot parse.  Block markers never
-- appear: ghc-events consumes them while framing.  Exits 1 with the error on
-- stderr when ghc-events cannot read the file.
module Main (main) where

import qualified Data.Map.Strict as Map
import GHC.RTS.Events
import System.Environment (getArgs)
import System.Exit (exitFailure)
import System.IO (hPutStrLn, stderr)

constructorName :: EventInfo -> String
constructorName spec = case spec of
  UnknownEvent r -> "Unknown:" ++ show r
  other -> takeWhile (/= ' ') (show other)

main :: IO ()
main = do
  args <- getArgs
  case args of
    [path] -> do
      parsed <- readEventLogFromFile path
      case parsed of
        Left err -> do
          hPutStrLn stderr ("EventCounts: " ++ path ++ ": " ++ err)
          exitFailure
        Right (EventLog hdr (Data evs)) -> do
          let tally = Map.fromListWith (+) [(constructorName (evSpec e), 1 :: Int) | e <- evs]
          putStrLn ("header_types " ++ show (length (eventTypes hdr)))
          mapM_ (\(name, n) -> putStrLn (name ++ " " ++ show n)) (Map.toList tally)
    _ -> do
      hPutStrLn stderr "usage: EventCounts FILE"
      exitFailure
