// Compiles one pattern the way Envoy does (re2::RE2 with RE2::Quiet: UTF-8, leftmost-first) and reports whether it
// compiled, its program size (what Envoy compares with re2.max_program_size.error_level) and RE2's error text.
#include <re2/re2.h>

#include <cstddef>
#include <cstring>

extern "C" int sluice_re2_compile(const char* pattern, size_t pattern_len, int* program_size, char* error,
                                  size_t error_cap) {
  re2::RE2 re(re2::StringPiece(pattern, pattern_len), re2::RE2::Quiet);
  if (!re.ok()) {
    const std::string& e = re.error();
    size_t n = e.size() < error_cap - 1 ? e.size() : error_cap - 1;
    std::memcpy(error, e.data(), n);
    error[n] = '\0';
    *program_size = 0;
    return 0;
  }
  *program_size = re.ProgramSize();
  return 1;
}
