// in-process reactor tests
