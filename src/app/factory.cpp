#include "app/factory.hpp"

#include <algorithm>

#include "api/environment.hpp"
#include "db/component.hpp"
#include "fs/component.hpp"
#include "supervisor/process_component.hpp"

namespace sm::app {

std::vector<std::unique_ptr<supervisor::component>> make_components(
    asio::any_io_executor executor, proc::reaper& reaper, const cli::server_options& opts,
    const config::configuration& config, const api::environment& env,
    const std::shared_ptr<proc::line_output> (&output)[2]) {
  std::vector<std::unique_ptr<supervisor::component>> made;
  auto named = [&](std::string_view stack) {
    return std::find(config.stacks.begin(), config.stacks.end(), stack) != config.stacks.end();
  };
  if (named(config::database_stack) && env.store()) {
    made.push_back(std::make_unique<db::component>(executor, *env.store(),
                                                   opts.data_dir / "database.sqlite",
                                                   config.database, env.lease_taken_over()));
  }
  // The filesystem before the declared processes: they may live on it.
  if (named(config::filesystem_stack) && env.store()) {
    const config::filesystem_config& f = config.filesystem;
    fs::component_settings settings;
    settings.mountpoint = config.storage.env_dir;
    settings.metadata = f.metadata_in(opts.data_dir);
    settings.staging_dir = f.staging_dir_in(opts.data_dir);
    settings.cache_dir = f.cache_dir_in(opts.data_dir);
    settings.cache_size = f.cache_size;
    settings.staging_size = f.staging_size;
    settings.capacity = f.capacity;
    settings.block_size = static_cast<std::uint32_t>(f.block_size);  // at most 16 MiB
    settings.upload_concurrency = f.upload_concurrency;
    settings.mount_options = f.mount_options;
    made.push_back(std::make_unique<fs::component>(executor, *env.store(), std::move(settings)));
  }
  const supervisor::declared_defaults defaults{
      opts.restart_delay, opts.timeout_stop, opts.log_prefix, {output[0], output[1]}};
  for (const std::string& name : supervisor::start_order(config)) {
    made.push_back(supervisor::make_declared_component(executor, reaper, name,
                                                       config.components.at(name), defaults));
  }
  return made;
}

std::unique_ptr<supervisor::process_component> make_command(
    asio::any_io_executor executor, proc::reaper& reaper, const cli::server_options& opts,
    const std::shared_ptr<proc::line_output> (&output)[2]) {
  supervisor::process_settings settings;
  settings.command = opts.command;
  settings.restart = *supervisor::parse_restart_policy(opts.restart);
  settings.restart_delay = opts.restart_delay;
  settings.timeout_stop = opts.timeout_stop;
  settings.backoff_max = opts.restart_backoff_max;
  settings.restart_max = opts.restart_max;
  settings.restart_window = opts.restart_window;
  if (opts.log_prefix) {
    // Built by insert: GCC 12 warns falsely (-Wrestrict) on "[" + string and its variants.
    settings.output_prefix = std::filesystem::path(opts.command.front()).filename().string();
    settings.output_prefix.insert(0, 1, '[');
    settings.output_prefix.append("] ");
    settings.output_to[0] = output[0];
    settings.output_to[1] = output[1];
  }
  return std::make_unique<supervisor::process_component>(
      executor, supervisor::process_component::role::command, std::vector<std::string>{},
      std::make_unique<supervisor::supervised_process>(executor, reaper, std::move(settings)));
}

}  // namespace sm::app
