// The tar-split record made in the applier's pass (split_record.h). Its rules are
// SplitRecorder's in image/src/tarsplit.ts; image's tests compare the two on the hostile
// catalogue and ordinary layers.
#include "split_record.h"

#include <cstring>
#include <vector>

#include "untar_errors.h"

namespace cairn {

namespace {

constexpr uint8_t kRaw = 0x52, kSize = 0x53, kFile = 0x46, kZeros = 0x5a;
constexpr size_t kRawMax = 1 << 20;  // SplitRecorder's FLUSH_AT
// Shortest zero run recorded as 'Z' rather than raw: a 'Z' costs 5 bytes, and splitting a
// raw record around it 5 more. Most of a tar's non-content bytes are zeros (a header's
// unused fields, PAX and content padding: 83 % of the bench image's records), which
// deflate otherwise reads one by one.
constexpr size_t kMinZeros = 32;

// The first non-zero byte of p[at, n), or n: a word at a time, for runs of hundreds of bytes.
size_t ZerosEnd(const uint8_t* p, size_t at, size_t n) {
  while (at + 8 <= n) {
    uint64_t w;
    std::memcpy(&w, p + at, 8);
    if (w != 0) break;
    at += 8;
  }
  while (at < n && p[at] == 0) at++;
  return at;
}
const char kWhiteout[] = ".wh.";

}  // namespace

std::string SplitRecord::Utf8Sanitized(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && static_cast<unsigned char>(s[i]) < 0x80) i++;
  if (i == s.size()) return s;
  static const char kReplacement[] = "\xEF\xBF\xBD";
  std::string out = s.substr(0, i);
  while (i < s.size()) {
    unsigned char b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      out += static_cast<char>(b);
      i++;
      continue;
    }
    size_t need;
    unsigned char lower = 0x80, upper = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
      need = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 2;
      if (b == 0xE0) lower = 0xA0;
      if (b == 0xED) upper = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 3;
      if (b == 0xF0) lower = 0x90;
      if (b == 0xF4) upper = 0x8F;
    } else {
      out += kReplacement;
      i++;
      continue;
    }
    // The continuation bytes: the first within [lower, upper], the rest within 80..BF. A
    // byte that does not fit ends the subpart (one U+FFFD) and is read again on its own.
    size_t j = i + 1, seen = 0;
    while (seen < need && j < s.size()) {
      unsigned char c = static_cast<unsigned char>(s[j]);
      if (c < lower || c > upper) break;
      lower = 0x80;
      upper = 0xBF;
      j++;
      seen++;
    }
    if (seen == need) out.append(s, i, j - i);
    else out += kReplacement;
    i = j;
  }
  return out;
}

std::string SplitRecord::NormalizeAbsolute(const std::string& name) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= name.size()) {
    size_t slash = name.find('/', start);
    if (slash == std::string::npos) slash = name.size();
    std::string part = name.substr(start, slash - start);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(std::move(part));
    }
    start = slash + 1;
  }
  std::string out;
  for (const std::string& p : parts) out += "/" + p;
  if (out.empty()) return "/";
  // posix.normalize keeps a trailing slash ("/a/" stays "/a/").
  if (!name.empty() && name.back() == '/') out += "/";
  return out;
}

void SplitRecord::InputBegin(const uint8_t* data, size_t len) {
  input_ = data;
  input_len_ = len;
  input_pos_ = 0;
}

void SplitRecord::InputEnd() {
  if (input_ != nullptr) Raw(input_ + input_pos_, input_len_ - input_pos_);
  input_ = nullptr;
}

void SplitRecord::OnEntry(const Entry& e) {
  FlushFile();
  CloseRaw();
  std::string name = Utf8Sanitized(e.name);
  std::string key = NormalizeAbsolute(name);
  // Without a trailing slash: `a/` (a directory) written over an earlier file `a` replaces it.
  if (key.size() > 1 && key.back() == '/') key.pop_back();
  size_t slash = key.rfind('/');
  std::string base = key.substr(slash + 1);
  bool whiteout = StartsWith(base, kWhiteout);
  std::string replaced = whiteout && !StartsWith(base, ".wh..wh.") ? key.substr(0, slash) + "/" + base.substr(4) : key;
  if (files_.count(key) || files_.count(replaced)) exact_ = false;
  current_path_ = name;
  if (e.type != '0') return;
  if (whiteout) {
    if (e.size > 0) exact_ = false;  // the applier keeps no file for it to be read from
    return;
  }
  files_.insert(key);
  logical_ += e.size;
  if (logical_ > max_logical_) {
    Failure f;
    f.code = "ERR_INVALID_ARCHIVE";
    f.message = what_ + " holds more than " + std::to_string(max_logical_) +
                " bytes of files counting sparse files at their full size (at " + name + ", " +
                (e.sparse ? "a sparse file of " : "") + std::to_string(e.size) +
                " bytes; maxUncompressedBytes): refused. If the image is genuine, import it with a larger maxUncompressedBytes.";
    f.subject = name;
    throw f;
  }
  out_ += static_cast<char>(kSize);
  U32(static_cast<uint32_t>(name.size()));
  out_ += name;
  F64(static_cast<double>(e.size));
}

void SplitRecord::OnData(const uint8_t* p, size_t n, int64_t position) {
  if (n == 0) return;
  // The reader hands out slices of the chunk it was given: what lies between the previous
  // slice and this one is raw.
  if (input_ != nullptr && p >= input_ + input_pos_ && p <= input_ + input_len_) {
    size_t at = static_cast<size_t>(p - input_);
    Raw(input_ + input_pos_, at - input_pos_);
    input_pos_ = at + n;
  }
  CloseRaw();
  if (has_file_ && file_path_ == current_path_ && file_position_ + file_length_ == position) {
    file_length_ += static_cast<int64_t>(n);
    return;
  }
  FlushFile();
  has_file_ = true;
  file_path_ = current_path_;
  file_position_ = position;
  file_length_ = static_cast<int64_t>(n);
}

void SplitRecord::Raw(const uint8_t* p, size_t n) {
  if (n == 0) return;
  FlushFile();
  for (size_t at = 0; at < n;) {
    const void* hit = std::memchr(p + at, 0, n - at);
    const size_t zeros = hit == nullptr ? n : static_cast<size_t>(static_cast<const uint8_t*>(hit) - p);
    const size_t end = ZerosEnd(p, zeros, n);
    // A short run stays raw, unless it continues a 'Z' left open by the previous input chunk.
    if (end - zeros >= kMinZeros || (zeros == at && zeros_ > 0)) {
      Literal(p + at, zeros - at);
      Zeros(end - zeros);
    } else {
      Literal(p + at, end - at);
    }
    at = end;
  }
}

void SplitRecord::Literal(const uint8_t* p, size_t n) {
  if (n == 0) return;
  CloseZeros();
  while (n > 0) {
    if (raw_at_ < 0) raw_at_ = Open(kRaw);
    size_t used = out_.size() - static_cast<size_t>(raw_at_) - 4;
    size_t take = n < kRawMax - used ? n : kRawMax - used;
    out_.append(reinterpret_cast<const char*>(p), take);
    p += take;
    n -= take;
    if (out_.size() - static_cast<size_t>(raw_at_) - 4 >= kRawMax) CloseLiteral();
  }
}

void SplitRecord::Zeros(size_t n) {
  if (n == 0) return;
  CloseLiteral();
  while (n > 0) {
    if (zeros_at_ < 0) zeros_at_ = Open(kZeros);
    size_t take = n < kRawMax - zeros_ ? n : kRawMax - zeros_;
    zeros_ += take;
    n -= take;
    if (zeros_ >= kRawMax) CloseZeros();
  }
}

void SplitRecord::CloseRaw() {
  CloseLiteral();
  CloseZeros();
}

void SplitRecord::CloseLiteral() {
  if (raw_at_ < 0) return;
  SetLength(raw_at_, static_cast<uint32_t>(out_.size() - static_cast<size_t>(raw_at_) - 4));
  raw_at_ = -1;
}

void SplitRecord::CloseZeros() {
  if (zeros_at_ < 0) return;
  SetLength(zeros_at_, static_cast<uint32_t>(zeros_));
  zeros_at_ = -1;
  zeros_ = 0;
}

int64_t SplitRecord::Open(uint8_t kind) {
  out_ += static_cast<char>(kind);
  int64_t at = static_cast<int64_t>(out_.size());
  U32(0);
  return at;
}

void SplitRecord::SetLength(int64_t at, uint32_t len) {
  for (int i = 0; i < 4; i++) out_[static_cast<size_t>(at) + i] = static_cast<char>(len >> (24 - 8 * i));
}

void SplitRecord::FlushFile() {
  if (!has_file_) return;
  has_file_ = false;
  out_ += static_cast<char>(kFile);
  U32(static_cast<uint32_t>(file_path_.size()));
  out_ += file_path_;
  F64(static_cast<double>(file_position_));
  F64(static_cast<double>(file_length_));
}

void SplitRecord::Finish() {
  FlushFile();
  CloseRaw();
}

void SplitRecord::U32(uint32_t v) {
  char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
  out_.append(b, 4);
}

void SplitRecord::F64(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  char b[8];
  for (int i = 0; i < 8; i++) b[i] = static_cast<char>(bits >> (56 - 8 * i));
  out_.append(b, 8);
}

}  // namespace cairn
