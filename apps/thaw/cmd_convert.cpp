#include "apps/thaw/commands.hpp"
namespace thaw::app {
void add_convert_command(CLI::App&) {}
} // namespace thaw::app
