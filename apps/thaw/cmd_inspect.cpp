#include "apps/thaw/commands.hpp"
namespace thaw::app {
void add_inspect_command(CLI::App&) {}
} // namespace thaw::app
