#include "cli/restore_db_command.hpp"

#include <cstdio>
#include <exception>
#include <iostream>
#include <memory>
#include <system_error>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/this_coro.hpp>
#include <nlohmann/json.hpp>

#include "async/offload.hpp"
#include "base/file.hpp"
#include "base/log.hpp"
#include "config/config.hpp"
#include "db/layout.hpp"
#include "db/restore.hpp"
#include "s3/object_store.hpp"

namespace sm::cli {

namespace {

namespace fs = std::filesystem;

// A failure the command reports as its one line on stderr (exit status 1).
class failed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::string set_path(fs::path& target, const std::string& value) {
  if (value.empty()) return "must not be empty";
  target = value;
  return {};
}

// The subcommand's options (cli/option_table.hpp). --tmp-dir reads the server's variable.
std::vector<option> restore_db_flags(restore_db_options& o) {
  return {
      {"to", arity::value, "", [&o](const std::string& v) { return set_path(o.to, v); }},
      {"at", arity::value, "",
       [&o](const std::string& v) -> std::string {
         o.at = parse_rfc3339(v);
         if (!o.at) return "expected an RFC 3339 time like 2026-11-22T13:00:00Z, got \"" + v + "\"";
         return {};
       }},
      {"generation", arity::value, "",
       [&o](const std::string& v) -> std::string {
         if (!db::layout::valid_generation(v)) {
           return "expected 32 lower-case hex digits, got \"" + v + "\"";
         }
         o.generation = v;
         return {};
       }},
      {"config", arity::value, "",
       [&o](const std::string& v) -> std::string {
         fs::path file;
         std::string why = set_path(file, v);
         if (why.empty()) o.config_file = file;
         return why;
       }},
      {"tmp-dir", arity::value, "STATE_MANAGER_TMP_DIR",
       [&o](const std::string& v) { return set_path(o.tmp_dir, v); }},
      {"force", arity::bare, "",
       [&o](const std::string&) -> std::string {
         o.force = true;
         return {};
       }},
  };
}

// The storage settings of the applied configuration, secrets resolved from the environment.
config::storage_config read_storage(const fs::path& file, const env_lookup& env) {
  std::optional<std::string> text;
  try {
    text = read_file(file);
  } catch (const std::system_error& e) {
    throw failed("cannot read the configuration " + file.string() + ": " + e.what());
  }
  if (!text) {
    throw failed("no configuration at " + file.string() +
                 " (apply one with POST /config first, or name it with --config)");
  }
  const nlohmann::json document = nlohmann::json::parse(*text, nullptr, false);
  if (document.is_discarded()) throw failed(file.string() + " is not valid JSON");
  config::parse_result parsed = config::parse(document, env);
  if (!parsed.config) {
    std::string details;
    for (const config::problem& p : parsed.problems) {
      if (!details.empty()) details += "; ";
      details += (p.path.empty() ? "(document)" : p.path) + ": " + p.message;
    }
    throw failed(file.string() + " is not a valid configuration: " + details);
  }
  return parsed.config->storage;
}

// As api::environment::claim builds it, so that both read the same store.
s3::store_config store_config_of(const config::storage_config& storage) {
  s3::store_config sc;
  sc.endpoint = storage.endpoint;
  sc.bucket = storage.bucket;
  sc.region = storage.region;
  sc.access_key = storage.access_key;
  sc.secret_key = storage.secret_key;
  sc.key_prefix = storage.key_prefix;
  sc.virtual_host = storage.virtual_host;
  return sc;
}

// `to` must not be a live database: replacing one under a running SQLite corrupts it.
void refuse_existing_target(const restore_db_options& o) {
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(o.to, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    throw failed("cannot inspect " + o.to.string() + ": " + ec.message());
  }
  if (!fs::exists(status)) return;
  if (fs::is_directory(status)) throw failed(o.to.string() + " is a directory");
  if (!o.force) {
    throw failed(o.to.string() +
                 " exists; give --force to replace it (only when nothing has it open)");
  }
}

asio::awaitable<db::restore_report> restore_from(s3::store_config sc, db::restore_request request) {
  std::unique_ptr<s3::object_store> store;
  try {
    store = s3::make_store(co_await asio::this_coro::executor, sc);
  } catch (const std::invalid_argument& e) {
    throw failed(std::string("the configuration's storage cannot be used: ") + e.what());
  }
  co_return co_await db::restore(*store, std::move(request));
}

// Runs the restore on a one-thread executor, as the server would; rethrows its failure.
db::restore_report restore_now(const s3::store_config& sc, const db::restore_request& request) {
  asio::io_context io;
  std::optional<db::restore_report> report;
  std::exception_ptr failure;
  asio::co_spawn(io, restore_from(sc, request), [&](std::exception_ptr e, db::restore_report r) {
    failure = e;
    if (!e) report = std::move(r);
  });
  io.run();
  stop_offload_worker();
  if (failure) std::rethrow_exception(failure);
  return *report;
}

void print_summary(const restore_db_options& o, const db::restore_report& r) {
  std::error_code ec;
  const auto size = fs::file_size(o.to, ec);
  char snapshot[17];
  std::snprintf(snapshot, sizeof snapshot, "%016llx",
                static_cast<unsigned long long>(r.snapshot_walidx));
  std::cout << "restored " << o.to.string() << " from generation " << r.generation << "\n"
            << "  snapshot    WAL index " << snapshot << "\n"
            << "  replayed    " << r.segments << " segments, " << r.commits << " commits\n"
            << "  size        " << r.db_pages << " pages, " << (ec ? 0 : size) << " bytes\n"
            << "  downloaded  " << r.bytes << " bytes\n"
            << "  as of       " << format_rfc3339(r.as_of, true)
            << " (when the newest object applied reached the store)\n"
            << "  took        " << r.took.count() << " ms\n";
  if (!r.stopped_early.empty()) {
    std::cout << "warning: the replay stopped early, at the last verified transaction before: "
              << r.stopped_early << "\n";
  }
}

std::string nothing_found(const restore_db_options& o) {
  std::string what = "nothing to restore: ";
  what += o.generation.empty() ? std::string("the store has no generation with a snapshot")
                               : "generation " + o.generation + " has no snapshot in the store";
  if (o.at) what += " at " + format_rfc3339(*o.at, true);
  return what;
}

}  // namespace

restore_db_command_line parse_restore_db_command_line(const std::vector<std::string>& args,
                                                      const env_lookup& env) {
  restore_db_command_line out;
  grammar rules;
  rules.help_hint = "restore-db --help";
  rules.words = words_rule::none;
  const parse_outcome parsed = parse_options(args, restore_db_flags(out.opts), rules, env);
  if (parsed.what != action::run) return {parsed.what, {}, parsed.error};
  if (out.opts.to.empty()) {
    return {restore_db_command_line::action::error,
            {},
            "--to FILE is required (see restore-db --help)"};
  }
  return out;
}

std::string restore_db_usage_text() {
  return R"(Usage: state-manager restore-db --to FILE [--at TIME] [--generation G] [OPTIONS]

Restores the environment's SQLite database from its replica in the object store into FILE,
without a running server: the chosen generation's snapshot, then every WAL segment after it
that reached the store (by TIME, with --at), replayed, checked with PRAGMA integrity_check, and
only then moved to FILE (its stale FILE-wal and FILE-shm removed). The store is the one the
applied configuration names; it is only read: the lease is not taken, so this is safe while a
state-manager runs, as long as FILE is not the database it uses.

Options:
  --to FILE          where to write the database (required); an existing FILE is refused
  --force            replace an existing FILE (only when nothing has it open)
  --at TIME          the state as of TIME, RFC 3339: 2026-11-22T13:00:00Z, or with a fraction
                     or an offset, 2026-11-22T14:00:00.5+01:00 (default: everything)
  --generation G     restore generation G (32 hex digits; default: the newest that has a
                     snapshot, by TIME)
  --config FILE      the configuration naming the store (default: TMP-DIR/config.json, the
                     one POST /config saved)
  --tmp-dir DIR      the server's --tmp-dir (STATE_MANAGER_TMP_DIR, default ./tmp)
  -h, --help         show this help and exit

Exit status: 0 restored (a warning line says so if the replay stopped early at a damaged or
missing segment: FILE then holds every transaction before it); 1 when the restore failed or
found nothing to restore (FILE is then untouched); 2 for a bad command line.
)";
}

int run_restore_db_command(const std::vector<std::string>& args, const env_lookup& env) {
  const restore_db_command_line cli = parse_restore_db_command_line(args, env);
  switch (cli.what) {
    case action::help:
    case action::version:  // not in this grammar (parse_options never answers it here)
      std::cout << restore_db_usage_text();
      return 0;
    case action::error:
      std::cerr << "state-manager restore-db: " << cli.error << "\n";
      return 2;
    case action::run:
      break;
  }
  const restore_db_options& o = cli.opts;
  // The summary goes to stdout; stderr carries only what went wrong.
  log::configure(log::level::warn, log::format::text);
  try {
    refuse_existing_target(o);
    const fs::path config_file = o.config_file.value_or(o.tmp_dir / "config.json");
    const s3::store_config sc = store_config_of(read_storage(config_file, env));
    db::restore_request request;
    request.to = o.to;
    request.at = o.at;
    request.generation = o.generation;
    const db::restore_report report = restore_now(sc, request);
    if (!report.found) throw failed(nothing_found(o));
    print_summary(o, report);
    return 0;
  } catch (const s3::error& e) {
    std::cerr << "state-manager restore-db: the store failed: " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "state-manager restore-db: " << e.what() << "\n";
  }
  return 1;
}

}  // namespace sm::cli
