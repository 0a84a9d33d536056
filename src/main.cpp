// skyrun: a LuaJIT host for fine-tuning jobs. Everything lives in src/<subsystem>/.
#include "host/cli.hpp"

int main(int argc, char** argv) { return sky::cli_main(argc, argv); }
