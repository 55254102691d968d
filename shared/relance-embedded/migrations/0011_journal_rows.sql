-- Schema version 11: a transition's journal records share one `journal` row. The `record`
-- column holds one record (a JSON object, as every row before) or the records of one
-- transition in order (a JSON array of objects, all of one contact). One row instead of
-- three to nine halves the cost of a step's journal; readers flatten the arrays, and the
-- retention purge dates an array by its last record. No row changes: this version only keeps
-- an older build, which would not read an array, from opening the file.
SELECT 1;
