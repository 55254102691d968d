-- Schema version 16: a journal row of several records writes what they share once. The
-- `record` column may now also hold `{"records":[..],"at":..,"contact":..,"enrollment":..}`:
-- each record without the instant, contact and enrollment equal to the row's (the row's `at`
-- is its last record's, which the retention purge reads as `$.at`). A step's records were
-- more than half those three fields; the journal takes a third less space. Older rows (one
-- record, or an array) still read. No row changes: this version only keeps an older build,
-- which would not read such a row, from opening the file.
SELECT 1;
