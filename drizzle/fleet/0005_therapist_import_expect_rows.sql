-- Optimistic check of the therapist import: the import reads the therapists of a file without
-- locking them and writes only rows whose version (xmin) is still the one it read. This
-- function aborts the transaction when fewer rows were written than planned (someone changed
-- a therapist meanwhile); the import then runs again on fresh data.
CREATE FUNCTION "fleet"."expect_rows"(actual bigint, expected bigint, what text) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
  IF actual <> expected THEN
    RAISE EXCEPTION '%: % of % rows changed meanwhile by someone else', what, expected - actual, expected
      USING ERRCODE = '40001';
  END IF;
  RETURN actual;
END;
$$;
