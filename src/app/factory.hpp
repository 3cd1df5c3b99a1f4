// Stack names to components: adding a component is one entry here and a folder of its own.
#pragma once

#include <memory>
#include <vector>

#include <asio/any_io_executor.hpp>

#include "cli/server_options.hpp"
#include "config/config.hpp"
#include "supervisor/component.hpp"

namespace sm::api {
class environment;
}
namespace sm::proc {
class reaper;
class line_output;
}  // namespace sm::proc
namespace sm::supervisor {
class process_component;
}

namespace sm::app {

// The components `config` names, in start order: the database first (the others and COMMAND
// never see it before its restore), then the declared processes in dependency order.
std::vector<std::unique_ptr<supervisor::component>> make_components(
    asio::any_io_executor executor, proc::reaper& reaper, const cli::server_options& opts,
    const config::configuration& config, const api::environment& env,
    const std::shared_ptr<proc::line_output> (&output)[2]);

// COMMAND, from the command line.
std::unique_ptr<supervisor::process_component> make_command(
    asio::any_io_executor executor, proc::reaper& reaper, const cli::server_options& opts,
    const std::shared_ptr<proc::line_output> (&output)[2]);

}  // namespace sm::app
