#include "apps/thaw/commands.hpp"
namespace thaw::app {
void add_make_model_command(CLI::App&) {}
} // namespace thaw::app
