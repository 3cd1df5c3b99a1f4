// `state-manager checkpoint create|restore|list|delete [ID]`: a client of a running
// state-manager's HTTP API, for an operator's shell or a script. It runs beside the server (or on
// the other side of a port forward), never in its place: it only sends requests.
//
// The command line and the human summaries are pure functions, tested without a socket; the
// requests go through cli/http_client, a blocking client (nothing else waits on this thread).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "cli/http_client.hpp"
#include "cli/option_table.hpp"

namespace sm::cli {

enum class checkpoint_verb { create, restore, list, remove };

struct checkpoint_options {
  checkpoint_verb verb = checkpoint_verb::list;
  std::string id;  // create: optional (the server picks v1, v2, ...); restore, delete: required
  std::string url_text = "http://127.0.0.1:8080";
  http_url url{"127.0.0.1", "8080", "127.0.0.1:8080", ""};
  // The token, from the same places as the server's: a token file (--token-file, or
  // STATE_MANAGER_TOKEN_FILE) wins over STATE_MANAGER_TOKEN.
  std::optional<std::filesystem::path> token_file;
  std::optional<std::string> token;
  bool json = false;  // print the server's answer as is
};

struct checkpoint_command_line {
  using action = cli::action;  // never version: the grammar has no --version
  action what = action::run;
  checkpoint_options opts;
  std::string error;  // for action::error: one line saying what is wrong
};

// `args`: the words after "checkpoint". Options may come before or after the verb and the id;
// "--" ends them (an id may start with '-'). Pure: the environment comes in through `env`.
checkpoint_command_line parse_checkpoint_command_line(const std::vector<std::string>& args,
                                                      const env_lookup& env);

std::string checkpoint_usage_text();

// 1536 -> "1.5 KiB", 16384 -> "16 KiB", 999 -> "999 B".
std::string format_size(std::uint64_t bytes);

// The human summary of a successful answer to `verb` (without a final newline), e.g.
// "checkpoint test1: 3 files, 12.3 MiB, database 16 KiB (sha256 7507df69…), 15 ms".
// Fields the server left out are shown as "?" rather than refused: an older or newer server
// still gets a summary.
std::string describe_answer(checkpoint_verb verb, const nlohmann::json& answer);

// The whole subcommand. Returns the exit status: 0 done, 1 the server answered an error or could
// not be reached, 2 a bad command line.
int run_checkpoint_command(const std::vector<std::string>& args, const env_lookup& env);

}  // namespace sm::cli
