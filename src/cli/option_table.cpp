#include "cli/option_table.hpp"

#include <map>

namespace sm::cli {

namespace {

const option* find_option(const std::vector<option>& table, std::string_view name) {
  for (const option& o : table) {
    if (o.name == name) return &o;
  }
  return nullptr;
}

// Not an option: a word. A lone "-" is a word too (by custom, standard input).
bool is_word(const std::string& arg) {
  return arg.empty() || arg == "-" || arg[0] != '-';
}

}  // namespace

parse_outcome parse_options(const std::vector<std::string>& args, const std::vector<option>& table,
                            const grammar& rules, const env_lookup& env) {
  parse_outcome out;
  auto error = [&](std::string message) {
    out.what = action::error;
    out.error = std::move(message);
    return out;
  };
  const std::string see = " (see " + rules.help_hint + ")";

  // First the words: which flags were given (the last of a repeated flag wins), and the words.
  std::map<std::string, std::string> given;
  std::vector<std::string> words;
  bool options_ended = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (options_ended) {
      words.push_back(arg);
      continue;
    }
    if (arg == "--") {
      if (rules.words == words_rule::command) {
        if (i + 1 == args.size()) return error("\"--\" must be followed by a command");
        words.assign(args.begin() + std::ptrdiff_t(i) + 1, args.end());
        break;
      }
      options_ended = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      out.what = action::help;
      return out;
    }
    if (rules.version && (arg == "-V" || arg == "--version")) {
      out.what = action::version;
      return out;
    }
    if (is_word(arg)) {
      if (rules.words == words_rule::none)
        return error("unexpected argument \"" + arg + "\"" + see);
      if (rules.words == words_rule::command) {
        // The first word that is not an option starts the command, as with tini and env.
        words.assign(args.begin() + std::ptrdiff_t(i), args.end());
        break;
      }
      words.push_back(arg);
      continue;
    }
    if (arg.rfind("--", 0) != 0) return error("unknown option " + arg + see);
    const std::size_t equals = arg.find('=');
    const std::string name =
        arg.substr(2, equals == std::string::npos ? std::string::npos : equals - 2);
    const option* o = find_option(table, name);
    if (!o) return error("unknown option --" + name + see);
    if (equals != std::string::npos) {
      if (o->takes == arity::bare) return error("option --" + name + " takes no value");
      given[name] = arg.substr(equals + 1);
    } else if (o->takes != arity::value) {
      given[name] = "true";
    } else if (i + 1 < args.size()) {
      given[name] = args[++i];
    } else {
      return error("option --" + name + " needs a value");
    }
  }
  if (rules.take_words) {
    if (std::string why = rules.take_words(words); !why.empty()) return error(why);
  } else if (!words.empty()) {
    return error("unexpected argument \"" + words.front() + "\"" + see);
  }

  // Then each setting from its flag, or else from its variable.
  for (const option& o : table) {
    if (const auto value = given.find(o.name); value != given.end()) {
      if (std::string why = o.apply(value->second); !why.empty()) {
        return error("--" + o.name + ": " + why);
      }
    } else if (!o.variable.empty()) {
      if (std::optional<std::string> value = env(o.variable)) {
        if (std::string why = o.apply(*value); !why.empty()) return error(o.variable + ": " + why);
      }
    }
  }
  return out;
}

std::string_view name_of(action a) {
  switch (a) {
    case action::run:
      return "run";
    case action::help:
      return "help";
    case action::version:
      return "version";
    case action::error:
      return "error";
  }
  return "unknown";
}

}  // namespace sm::cli
