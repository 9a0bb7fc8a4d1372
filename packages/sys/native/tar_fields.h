// Tar header fields and PAX values for the layer applier's reader: octal and GNU base-256
// numbers, strings, checksums, PAX times and decimals, base64 and %-escapes, read exactly
// as archive's tar-fields.ts and tar-parser.ts read them (the differential fuzzer checks).
#pragma once

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <string>

namespace cairn {

constexpr size_t kTarBlock = 512;
constexpr int64_t kMaxSafeInteger = 9007199254740991;  // what JS's parser accepts (2^53 - 1)

// Octal ASCII (space/NUL padded) or GNU base-256; false when malformed or beyond 2^53.
bool ReadNumber(const uint8_t* b, size_t off, size_t width, int64_t* out);
// The field up to its first NUL.
std::string ReadString(const uint8_t* b, size_t off, size_t width);
bool IsZeroBlock(const uint8_t* b);
// The unsigned byte sum with the checksum field read as spaces, or the signed one.
bool ChecksumMatches(const uint8_t* b, int64_t stored);
// Zero bytes after `size` bytes of data, to the block boundary.
size_t Padding(int64_t size);
// "1700000000.123456789", "-1.5": seconds and nanoseconds (floored).
bool ParsePaxTime(const std::string& t, timespec* out);
// Decimal digits only, up to 2^53 - 1.
bool ParseDecimal(const std::string& t, int64_t* out);
// Buffer.from(text, 'base64') semantics.
std::string Base64Decode(const std::string& in);
// decodeURIComponent, keeping the text as it is when a %-escape is malformed.
std::string UriDecode(const std::string& in);
// Whether a global PAX key is one an entry can use (the others are dropped when read).
bool GlobalKeyMatters(const std::string& k);

}  // namespace cairn
