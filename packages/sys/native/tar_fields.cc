// Tar header fields and PAX values for the layer applier's reader (see tar_fields.h).
#include "tar_fields.h"

#include <cstring>

#include "untar_errors.h"

namespace cairn {

namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

// Octal ASCII (space/NUL padded) or GNU base-256; false when malformed or beyond 2^53.
bool ReadNumber(const uint8_t* b, size_t off, size_t width, int64_t* out) {
  uint8_t first = b[off];
  if (first & 0x80) {
    __int128 v = 0;
    for (size_t i = 0; i < width; i++) {
      uint8_t byte = (i == 0 && first != 0xff) ? (first & 0x7f) : b[off + i];
      v = (v << 8) | byte;
    }
    if (first == 0xff) v -= static_cast<__int128>(1) << (8 * width);
    if (v > kMaxSafeInteger || v < -kMaxSafeInteger) return false;
    *out = static_cast<int64_t>(v);
    return true;
  }
  size_t i = off, end = off + width;
  while (i < end && (b[i] == 0x20 || b[i] == 0)) {
    if (b[i] == 0) {
      *out = 0;
      return true;
    }
    i++;
  }
  int64_t v = 0;
  for (; i < end; i++) {
    uint8_t c = b[i];
    if (c >= '0' && c <= '7') {
      v = v * 8 + (c - '0');
    } else if (c == 0x20 || c == 0) {
      break;
    } else {
      return false;
    }
  }
  for (; i < end; i++)
    if (b[i] != 0x20 && b[i] != 0) return false;
  *out = v;
  return true;
}

std::string ReadString(const uint8_t* b, size_t off, size_t width) {
  size_t end = off;
  while (end < off + width && b[end] != 0) end++;
  return std::string(reinterpret_cast<const char*>(b + off), end - off);
}

bool IsZeroBlock(const uint8_t* b) {
  for (size_t i = 0; i < kTarBlock; i++)
    if (b[i]) return false;
  return true;
}

// The unsigned byte sum with the checksum field read as spaces, or the signed sum some
// historic tars wrote. The unsigned pass has no branch (it vectorizes): this runs twice
// per entry of a GNU pax-format tar.
bool ChecksumMatches(const uint8_t* b, int64_t stored) {
  uint32_t u = 0;
  for (size_t i = 0; i < kTarBlock; i++) u += b[i];
  for (size_t i = 148; i < 156; i++) u -= b[i];
  u += 8 * 0x20;
  if (stored == static_cast<int64_t>(u)) return true;
  int64_t s = 8 * 0x20;
  for (size_t i = 0; i < kTarBlock; i++) {
    if (i >= 148 && i < 156) continue;
    s += static_cast<int8_t>(b[i]);
  }
  return stored == s;
}

size_t Padding(int64_t size) {
  size_t r = static_cast<size_t>(size % kTarBlock);
  return r == 0 ? 0 : kTarBlock - r;
}

// "1700000000.123456789", "-1.5": seconds and nanoseconds (floored, as NsToTimespec).
bool ParsePaxTime(const std::string& t, timespec* out) {
  size_t i = 0, n = t.size();
  bool neg = n > 0 && t[0] == '-';
  if (neg) i = 1;
  size_t secStart = i;
  int64_t sec = 0;
  for (; i < n && t[i] >= '0' && t[i] <= '9'; i++) {
    if (sec < 922337203685) sec = sec * 10 + (t[i] - '0');  // far-future times saturate
  }
  if (i == secStart) return false;
  int64_t frac = 0;
  int digits = 0;
  if (i < n && t[i] == '.') {
    for (i++; i < n; i++) {
      if (t[i] < '0' || t[i] > '9') return false;
      if (digits < 9) {
        frac = frac * 10 + (t[i] - '0');
        digits++;
      }
    }
  }
  if (i != n) return false;
  for (; digits < 9; digits++) frac *= 10;
  if (neg) {
    sec = -sec;
    if (frac > 0) {
      sec -= 1;
      frac = 1000000000 - frac;
    }
  }
  out->tv_sec = static_cast<time_t>(sec);
  out->tv_nsec = static_cast<long>(frac);
  return true;
}

// Decimal digits only (what the JS parser's paxInt accepts), up to 2^53 - 1.
bool ParseDecimal(const std::string& t, int64_t* out) {
  if (t.empty()) return false;
  int64_t v = 0;
  for (char c : t) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
    if (v > kMaxSafeInteger) return false;
  }
  *out = v;
  return true;
}

// Buffer.from(text, 'base64') semantics: both alphabets, anything else skipped, '=' ends.
std::string Base64Decode(const std::string& in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+' || c == '-') v = 62;
    else if (c == '/' || c == '_') v = 63;
    else if (c == '=') break;
    else continue;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}


// decodeURIComponent, keeping the text as it is when a %-escape is malformed.
std::string UriDecode(const std::string& in) {
  std::string out;
  for (size_t i = 0; i < in.size(); i++) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) return in;
    int hi = HexDigit(in[i + 1]);
    int lo = HexDigit(in[i + 2]);
    if (hi < 0 || lo < 0) return in;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

// The global keys an entry can use (BuildEntry); the others are dropped when read, so they
// cost nothing per entry and do not count against TarLimits::kGlobalPax. tar-parser.ts
// keeps the same set.
bool GlobalKeyMatters(const std::string& k) {
  static const char* const kKeys[] = {"path", "linkpath", "size", "uid", "gid", "uname", "gname", "mtime", "atime",
                                      "SCHILY.devmajor", "SCHILY.devminor", "GNU.sparse.major", "GNU.sparse.minor",
                                      "GNU.sparse.name", "GNU.sparse.realsize", "GNU.sparse.size", "GNU.sparse.map"};
  for (const char* key : kKeys)
    if (k == key) return true;
  return StartsWith(k, "SCHILY.xattr.") || StartsWith(k, "LIBARCHIVE.xattr.");
}

}  // namespace cairn
