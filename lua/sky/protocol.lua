-- sky.protocol: the frame kinds of the driver/worker protocol (see src/wire/wire.hpp for the
-- framing and src/pool/worker_main.cpp for the kinds the C++ side writes itself).
--   worker -> driver: HELLO (text: versions), READY, FAIL, RESULT, BATCH_RESULT, STDOUT, STDERR, BYE
--   driver -> worker: SETUP (env, node info, plugins, secrets), TASK, MAP_FN, BATCH, MAP_END, SHUTDOWN
--   CALL (worker -> driver, "<id>:" request) and REPLY (driver -> worker, "<id>:" answer): the
--   distributed collections of sky.collections, asked for while a task runs
-- Task payloads are "<id>:" followed by a wire-encoded value, so a worker that cannot decode the
-- value can still answer for the right task.
return {
  HELLO = 1, SETUP = 2, READY = 3, TASK = 4, RESULT = 5, MAP_FN = 6, BATCH = 7, BATCH_RESULT = 8,
  STDOUT = 9, STDERR = 10, SHUTDOWN = 11, BYE = 12, FAIL = 13, MAP_END = 14,
  CALL = 15, REPLY = 16,
}
