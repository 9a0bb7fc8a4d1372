// How the layer applier (tar_reader, beneath, applier, untar) fails: a C++ exception
// carrying either an archive fault (a CairnError code for the JS side) or a failed
// syscall, with the entry it hit. untar.cc turns it into the JS error at the boundary.
#pragma once

#include <cstring>
#include <string>

#include "common.h"

namespace cairn {

// An archive fault (code set) or a failed syscall (sys.err set), with the entry it hit.
struct Failure {
  std::string code;
  std::string message;
  std::string subject;
  SysError sys;
};

// The JS error for a Failure (untar.cc): {cairnCode, message, subject} for an archive
// fault, a Node-style errno error with `entry` for a failed syscall.
Napi::Error FailureToJs(Napi::Env env, const Failure& f);

// Control bytes as \xNN, so a hostile name cannot forge lines in a message.
inline std::string Printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

inline bool StartsWith(const std::string& s, const char* prefix) {
  return s.compare(0, std::strlen(prefix), prefix) == 0;
}

[[noreturn]] inline void Invalid(const std::string& subject, const std::string& what) {
  Failure f;
  f.code = "ERR_INVALID_ARCHIVE";
  f.message = "Invalid layer archive: " + what + ". The tar is corrupt or incomplete; fetch or export it again.";
  f.subject = subject;
  throw f;
}

[[noreturn]] inline void InvalidName(const std::string& name, const std::string& why) {
  std::string shown = name.size() > 120 ? Printable(name.substr(0, 60)) + "…" + Printable(name.substr(name.size() - 40)) : Printable(name);
  Failure f;
  f.code = "ERR_INVALID_ARCHIVE";
  f.message = "Archive entry \"" + shown + "\" " + why + "; no Linux filesystem can hold it. The layer was not applied.";
  f.subject = name;
  throw f;
}

[[noreturn]] inline void InvalidEntry(const std::string& name, const std::string& what) {
  Failure f;
  f.code = "ERR_INVALID_ARCHIVE";
  f.message = "Invalid layer archive: " + what + ".";
  f.subject = name;
  throw f;
}

[[noreturn]] inline void Unsafe(const std::string& name, const std::string& why) {
  Failure f;
  f.code = "ERR_UNSAFE_ARCHIVE";
  f.message = "Refusing archive entry \"" + Printable(name) + "\": " + why +
              ". The layer would reach outside its directory; it was not applied.";
  f.subject = name;
  throw f;
}

}  // namespace cairn
