-- sky.protocol: the frame kinds of the driver/worker protocol, by name and by number
-- ({HELLO = 1, ..., [1] = "HELLO"}). They are declared once, in src/wire/wire.hpp (FrameKind),
-- with what each carries; src/pool/worker_main.cpp writes HELLO, STDOUT and STDERR itself.
return require("sky.wire").kinds
