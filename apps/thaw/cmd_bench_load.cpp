#include "apps/thaw/commands.hpp"
namespace thaw::app {
void add_bench_load_command(CLI::App&) {}
} // namespace thaw::app
