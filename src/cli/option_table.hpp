// The one command-line parser of the command-line tools: the server's flags, `checkpoint` and
// `restore-db` each describe their options as a table, and parse_options walks the arguments
// against it. Pure: the environment comes in through a lookup function, so every case is
// unit-testable.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sm::cli {

using env_lookup = std::function<std::optional<std::string>(const std::string& name)>;

// What follows an option's name.
enum class arity {
  value,   // --name VALUE or --name=VALUE
  bare,    // --name alone (its value is "true"); --name=VALUE is refused
  toggle,  // --name alone means "true"; --name=VALUE gives the value (e.g. false)
};

// One row of a table.
struct option {
  std::string name;  // without the leading "--"
  arity takes = arity::value;
  // Read when the flag is not given (a given flag replaces its variable entirely, so a bad
  // value there does not matter then); empty: none.
  std::string variable;
  // Applies a value to the options being built: returns "" when done, or why the value is
  // wrong, without naming the flag (the parser adds "--name: " or "VARIABLE: ").
  std::function<std::string(const std::string& value)> apply;
};

// Where the words go: the arguments that are neither an option nor an option's value.
enum class words_rule {
  command,   // the first word starts COMMAND, and so does whatever follows "--"; COMMAND's
             // arguments are its own, not options
  anywhere,  // words and options in any order; "--" ends the options (a word may start with '-')
  none,      // no words at all
};

struct grammar {
  std::string help_hint;  // where to look: "--help", "checkpoint --help"
  words_rule words = words_rule::none;
  bool version = false;  // -V and --version ask for the version
  // Takes the words (before any option is applied, so that a wrong word is the error reported
  // first); returns "" or why they do not fit. Unset: words are refused.
  std::function<std::string(const std::vector<std::string>& words)> take_words;
};

// What a command line asks for, the same for every command: run, print the help or the version,
// or refuse (with one line saying why).
enum class action { run, help, version, error };
std::string_view name_of(action a);

struct parse_outcome {
  action what = action::run;
  std::string error;  // for action::error: one line saying what is wrong
};

// `args` excludes the program's name (and the subcommand's). The arguments are walked first:
// "--name VALUE", "--name=VALUE", "-h"/"--help" (and "-V"/"--version" where the grammar has it)
// which win at once; the last of a repeated flag counts. Then each option of `table`, in the
// table's order, is applied from its flag, or else from its variable. The first problem ends the
// parse: "unknown option --x (see HINT)", "option --x needs a value", "option --x takes no
// value", "--x: WHY", "VARIABLE: WHY", or what take_words said.
parse_outcome parse_options(const std::vector<std::string>& args, const std::vector<option>& table,
                            const grammar& rules, const env_lookup& env);

}  // namespace sm::cli
