#pragma once
// Spec strings name a mask strategy and its options in one line, for command lines and configs:
//   spec  := name [ ":" arg { "," arg } ]      arg := key "=" value      (spaces around tokens ignored)
// e.g. "simmim:ratio=0.6,mask_patch=32". Each strategy reads its own keys and writes them back (spec()),
// so a spec round-trips through make_mask_generator.

#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "simmim/core/check.hpp"

SIMMIM_NAMESPACE_BEGIN

struct MaskSpec {
  std::string text;  // as given, for messages
  std::string name;
  std::vector<std::pair<std::string, std::string>> args;  // in order; a key may repeat (region boxes)
};

namespace detail {

inline std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\n\r");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\n\r");
  return s.substr(b, e - b + 1);
}

inline std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

// Shortest decimal that reads back as the same double, so spec() -> parse is exact and still readable.
inline std::string format_double(double v) {
  char buf[40];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

}  // namespace detail

// Splits a spec string; errors (naming `api`) on an empty name or an argument without "key=value".
inline MaskSpec parse_mask_spec(const std::string& text, const char* api = "simmim::parse_mask_spec") {
  MaskSpec spec;
  spec.text = text;
  const auto colon = text.find(':');
  spec.name = detail::trim(text.substr(0, colon));
  SIMMIM_CHECK_VALUE(!spec.name.empty(), api, "spec", "\"<strategy>[:key=value,...]\"", "\"", text, "\"");
  if (colon == std::string::npos) return spec;
  const std::string rest = text.substr(colon + 1);
  if (detail::trim(rest).empty()) return spec;  // "mae:" means defaults too
  size_t start = 0;
  while (start <= rest.size()) {
    const auto comma = rest.find(',', start);
    const std::string item = rest.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const auto eq = item.find('=');
    const std::string key = detail::trim(item.substr(0, eq));
    SIMMIM_CHECK_VALUE(eq != std::string::npos && !key.empty(), api, "each argument of spec \"" + text + "\"",
                       "key=value", "'", detail::trim(item), "'");
    spec.args.emplace_back(key, detail::trim(item.substr(eq + 1)));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return spec;
}

// Typed access to a spec's arguments. Every getter records its key as accepted, so finish() can name
// the accepted keys when an unknown one arrives.
class MaskSpecReader {
 public:
  MaskSpecReader(const MaskSpec& spec, const char* api) : spec_(spec), api_(api) {}

  double number(const char* key, double fallback) { return optional_number(key).value_or(fallback); }
  c10::optional<double> optional_number(const char* key) {
    const std::string* v = find_one(key);
    if (!v) return c10::nullopt;
    errno = 0;
    char* end = nullptr;
    const double d = std::strtod(v->c_str(), &end);
    SIMMIM_CHECK_VALUE(!v->empty() && *end == '\0' && errno != ERANGE, api_, where(key), "a number", "'", *v, "'");
    return d;
  }

  int64_t integer(const char* key, int64_t fallback) { return optional_integer(key).value_or(fallback); }
  c10::optional<int64_t> optional_integer(const char* key) {
    const std::string* v = find_one(key);
    if (!v) return c10::nullopt;
    errno = 0;
    char* end = nullptr;
    const long long i = std::strtoll(v->c_str(), &end, 10);
    SIMMIM_CHECK_VALUE(!v->empty() && *end == '\0' && errno != ERANGE, api_, where(key), "an integer", "'", *v, "'");
    return static_cast<int64_t>(i);
  }

  bool flag(const char* key, bool fallback) {
    const std::string* v = find_one(key);
    if (!v) return fallback;
    if (*v == "1" || *v == "true" || *v == "yes" || *v == "on") return true;
    if (*v == "0" || *v == "false" || *v == "no" || *v == "off") return false;
    SIMMIM_CHECK_VALUE(false, api_, where(key), "a flag (true/false, 1/0, yes/no, on/off)", "'", *v, "'");
    return fallback;
  }

  std::string word(const char* key, const std::string& fallback) {
    const std::string* v = find_one(key);
    return v ? *v : fallback;
  }

  // Every value of a key that may repeat.
  std::vector<std::string> all(const char* key) {
    accepted_.emplace_back(key);
    std::vector<std::string> out;
    for (const auto& kv : spec_.args)
      if (kv.first == key) out.push_back(kv.second);
    return out;
  }

  // Errors on any key no getter asked for.
  void finish() const {
    for (const auto& kv : spec_.args) {
      bool known = false;
      for (const auto& k : accepted_) known = known || k == kv.first;
      SIMMIM_CHECK_VALUE(known, api_, "the keys of spec \"" + spec_.text + "\"",
                         "among those strategy '" + spec_.name + "' accepts (" +
                             (accepted_.empty() ? std::string("none") : detail::join(accepted_, ", ")) + ")",
                         "unknown key '", kv.first, "'");
    }
  }

  // Message prefix for a key, for strategies that validate values further.
  std::string where(const char* key) const { return std::string("key '") + key + "' of spec \"" + spec_.text + "\""; }

 private:
  const std::string* find_one(const char* key) {
    accepted_.emplace_back(key);
    const std::string* found = nullptr;
    for (const auto& kv : spec_.args) {
      if (kv.first != key) continue;
      SIMMIM_CHECK_VALUE(found == nullptr, api_, where(key), "given once", "it twice");
      found = &kv.second;
    }
    return found;
  }

  const MaskSpec& spec_;
  const char* api_;
  std::vector<std::string> accepted_;
};

// Builds a spec string: MaskSpecWriter("mae").number("ratio", 0.75).str() == "mae:ratio=0.75".
class MaskSpecWriter {
 public:
  explicit MaskSpecWriter(std::string name) : text_(std::move(name)) {}
  MaskSpecWriter& number(const char* key, double v) { return word(key, detail::format_double(v)); }
  MaskSpecWriter& integer(const char* key, int64_t v) { return word(key, std::to_string(v)); }
  MaskSpecWriter& flag(const char* key, bool v) { return word(key, v ? "true" : "false"); }
  MaskSpecWriter& word(const char* key, const std::string& v) {
    text_ += (first_ ? ":" : ",") + std::string(key) + "=" + v;
    first_ = false;
    return *this;
  }
  const std::string& str() const { return text_; }

 private:
  std::string text_;
  bool first_ = true;
};

SIMMIM_NAMESPACE_END
