// The layer applier's tar reader (see tar_reader.h): the state machine that turns raw
// bytes into entries for a sink, PAX records and GNU sparse maps (fields: tar_fields.h).
#include "tar_reader.h"

#include "tar_fields.h"

#include <algorithm>
#include <cstring>

namespace cairn {

namespace {

constexpr size_t kBlock = 512;

}  // namespace

void Entry::Xattrs::Set(std::string name, std::string value) {
  if (items_.size() < kLinear) {
    for (auto& [k, v] : items_) {
      if (k == name) {
        v = std::move(value);
        return;
      }
    }
  } else {
    if (index_.empty()) {
      for (size_t i = 0; i < items_.size(); i++) index_.emplace(items_[i].first, i);
    }
    auto it = index_.find(name);
    if (it != index_.end()) {
      items_[it->second].second = std::move(value);
      return;
    }
    index_.emplace(name, items_.size());
  }
  items_.emplace_back(std::move(name), std::move(value));
}

void PaxTable::Set(const std::string& key, std::string value) {
  auto it = index_.find(key);
  if (it != index_.end()) {
    bytes_ -= it->second->first.size() + it->second->second.size();
    if (value.empty()) {
      items_.erase(it->second);
      index_.erase(it);
      return;
    }
    it->second->second = std::move(value);
    bytes_ += key.size() + it->second->second.size();
    return;
  }
  if (value.empty()) return;
  bytes_ += key.size() + value.size();
  items_.emplace_back(key, std::move(value));
  index_.emplace(key, std::prev(items_.end()));
}

// The GNU.sparse.* records BuildEntry and PaxSparse read; an empty value removes one.
struct TarReader::SparseAttrs {
  std::optional<std::string> major, minor, name, realsize, size, map;

  void Set(const std::string& k, const std::string& v) {
    std::optional<std::string>* slot = k == "major" ? &major : k == "minor" ? &minor : k == "name" ? &name
                                     : k == "realsize" ? &realsize : k == "size" ? &size : k == "map" ? &map : nullptr;
    if (slot == nullptr) return;
    if (v.empty()) slot->reset();
    else *slot = v;
  }
  bool any() const { return major || minor || name || realsize || size || map; }
};

void TarReader::Write(const uint8_t* data, size_t len) {
  size_t pos = 0;
  while (pos < len) {
    switch (state_) {
      case State::kHeader:
      case State::kSparseExt:
      case State::kSparseMap: {
        const uint8_t* block;
        if (block_fill_ == 0 && len - pos >= kBlock) {
          block = data + pos;
          pos += kBlock;
        } else {
          size_t n = std::min(kBlock - block_fill_, len - pos);
          std::memcpy(block_buf_ + block_fill_, data + pos, n);
          block_fill_ += n;
          pos += n;
          if (block_fill_ < kBlock) return;
          block_fill_ = 0;
          block = block_buf_;
        }
        int64_t at = offset_;
        offset_ += kBlock;
        if (state_ == State::kHeader) OnHeader(block, at);
        else if (state_ == State::kSparseExt) OnSparseExt(block);
        else OnSparseMapBlock(block);
        break;
      }
      case State::kMeta: {
        size_t n = std::min(meta_size_ - meta_.size(), len - pos);
        meta_.append(reinterpret_cast<const char*>(data + pos), n);
        pos += n;
        offset_ += static_cast<int64_t>(n);
        if (meta_.size() == meta_size_) OnMeta();
        break;
      }
      case State::kData: {
        size_t n = static_cast<size_t>(std::min<int64_t>(remaining_, static_cast<int64_t>(len - pos)));
        Emit(data + pos, n);
        pos += n;
        offset_ += static_cast<int64_t>(n);
        remaining_ -= static_cast<int64_t>(n);
        if (remaining_ == 0) FinishEntry();
        break;
      }
      case State::kSkip: {
        size_t n = static_cast<size_t>(std::min<int64_t>(skip_left_, static_cast<int64_t>(len - pos)));
        pos += n;
        offset_ += static_cast<int64_t>(n);
        skip_left_ -= static_cast<int64_t>(n);
        if (skip_left_ == 0) state_ = State::kHeader;
        break;
      }
      case State::kDone:
        return;
    }
  }
}

// The input ended: refuses a truncated archive.
void TarReader::Finish() {
  if (state_ == State::kDone) return;
  bool clean = state_ == State::kHeader && block_fill_ == 0 && !has_long_name_ && !has_long_link_ && local_.empty() && !has_local_pax_;
  if (!clean) {
    std::string where = in_entry_ || state_ != State::kHeader ? " inside entry \"" + entry_name_ + "\"" : "";
    Invalid(entry_name_.empty() ? "offset " + std::to_string(header_offset_) : entry_name_,
            "the archive is truncated: input ended" + where + " at byte " + std::to_string(offset_ + static_cast<int64_t>(block_fill_)));
  }
  state_ = State::kDone;
}

[[noreturn]] void TarReader::Bad(const std::string& what) {
  Invalid(entry_name_.empty() ? "offset " + std::to_string(header_offset_) : entry_name_, what);
}

int64_t TarReader::Num(const uint8_t* b, size_t off, size_t width, const char* field) {
  int64_t v;
  if (!ReadNumber(b, off, width, &v)) Bad(std::string("malformed ") + field + " field in the header at byte " + std::to_string(header_offset_));
  return v;
}

void TarReader::OnHeader(const uint8_t* b, int64_t at) {
  header_offset_ = at;
  if (IsZeroBlock(b)) {
    if (saw_zero_) {
      state_ = State::kDone;
      if (has_long_name_ || has_long_link_ || has_local_pax_) Bad("end of archive at byte " + std::to_string(at) + " right after an extended header");
    }
    saw_zero_ = true;
    return;
  }
  if (saw_zero_) Bad("a zero block at byte " + std::to_string(at - static_cast<int64_t>(kBlock)) + " is followed by more entries");
  entry_name_ = ReadString(b, 0, 100);
  int64_t stored;
  if (!ReadNumber(b, 148, 8, &stored) || !ChecksumMatches(b, stored)) Bad("header checksum mismatch at byte " + std::to_string(at));
  char flag = b[156] == 0 ? '0' : static_cast<char>(b[156]);
  int64_t size = Num(b, 124, 12, "size");
  if (size < 0) Bad("negative size in the header at byte " + std::to_string(at));
  if (flag == 'x' || flag == 'g' || flag == 'L' || flag == 'K') {
    if (size > static_cast<int64_t>(TarLimits::kExtendedHeader)) {
      Bad("a " + std::to_string(size) + "-byte extended header at byte " + std::to_string(at) + " (limit " + std::to_string(TarLimits::kExtendedHeader) + ")");
    }
    if (flag == 'x') {
      local_bytes_ += static_cast<size_t>(size);
      if (local_bytes_ > TarLimits::kLocalPax) {
        Bad("the PAX headers before the entry at byte " + std::to_string(at) + " hold more than " + std::to_string(TarLimits::kLocalPax) + " bytes (limit)");
      }
    }
    meta_kind_ = flag;
    meta_.clear();
    meta_size_ = static_cast<size_t>(size);
    pad_after_ = Padding(size);
    state_ = State::kMeta;
    if (size == 0) OnMeta();
    return;
  }
  BuildEntry(b, flag, size);
}

void TarReader::OnMeta() {
  switch (meta_kind_) {
    case 'L':
      long_name_ = meta_.substr(0, meta_.find('\0'));
      has_long_name_ = true;
      break;
    case 'K':
      long_link_ = meta_.substr(0, meta_.find('\0'));
      has_long_link_ = true;
      break;
    default: {
      bool global = meta_kind_ == 'g';
      if (!ScanPax(global)) Bad("malformed PAX header at byte " + std::to_string(header_offset_));
      if (!global) has_local_pax_ = true;
      if (global && global_.bytes() > TarLimits::kGlobalPax) {
        Bad("the global PAX records in force after the header at byte " + std::to_string(header_offset_) + " hold " +
            std::to_string(global_.bytes()) + " bytes (limit " + std::to_string(TarLimits::kGlobalPax) + ")");
      }
    }
  }
  meta_.clear();
  skip_left_ = static_cast<int64_t>(pad_after_);
  state_ = skip_left_ > 0 ? State::kSkip : State::kHeader;
}

// "<len> <key>=<value>\n" records (pax.ts scanPax).
bool TarReader::ScanPax(bool global) {
  const std::string& body = meta_;
  size_t pos = 0, size = body.size();
  while (pos < size) {
    if (body[pos] == 0) break;  // trailing NUL padding
    size_t len = 0, i = pos;
    while (i < size && body[i] >= '0' && body[i] <= '9') {
      len = len * 10 + static_cast<size_t>(body[i] - '0');
      i++;
      if (len > size) return false;
    }
    if (i == pos || i >= size || body[i] != ' ' || len <= i - pos + 1 || pos + len > size) return false;
    size_t end = pos + len;
    if (body[end - 1] != '\n') return false;
    size_t eq = body.find('=', i + 1);
    if (eq == std::string::npos || eq >= end - 1 || eq == i + 1) return false;
    std::string key = body.substr(i + 1, eq - i - 1);
    if (key != "ctime") {
      std::string value = body.substr(eq + 1, end - 1 - eq - 1);
      if (!global) {
        local_.emplace_back(std::move(key), std::move(value));
      } else if (GlobalKeyMatters(key)) {
        global_.Set(key, std::move(value));
      }
    }
    pos = end;
  }
  return true;
}

int64_t TarReader::PaxInt(const std::string& key, const std::string& text) {
  int64_t v;
  if (!ParseDecimal(text, &v)) Bad("PAX record " + key + "=\"" + text.substr(0, 40) + "\" is not a number");
  return v;
}

void TarReader::BuildEntry(const uint8_t* b, char flag, int64_t headerSize) {
  bool ustar = b[257] == 'u' && b[258] == 's' && b[259] == 't' && b[260] == 'a' && b[261] == 'r';
  bool gnu = ustar && b[262] == ' ';
  bool posix = ustar && b[262] == 0;

  Entry e;
  std::string name = entry_name_;
  if (posix && b[345] != 0) name = ReadString(b, 345, 155) + "/" + name;
  std::string linkname = ReadString(b, 157, 100);
  int64_t uid = Num(b, 108, 8, "uid");
  int64_t gid = Num(b, 116, 8, "gid");
  int64_t size = headerSize;
  int64_t headerMtime = Num(b, 136, 12, "mtime");
  bool hasMtime = false;
  timespec mtime{};
  bool hasAtime = false;
  timespec atime{};
  int64_t devmajor = ustar ? Num(b, 329, 8, "devmajor") : 0;
  int64_t devminor = ustar ? Num(b, 337, 8, "devminor") : 0;
  if (gnu && b[345] != 0) {
    int64_t at;
    if (ReadNumber(b, 345, 12, &at) && at != 0) {
      atime.tv_sec = static_cast<time_t>(at);
      hasAtime = true;
    }
  }
  // Header values a PAX record with an empty value puts back (copied only then).
  const std::string hLink = linkname;
  const std::string hPrefixed = name;
  const int64_t hUid = uid, hGid = gid, hSize = size, hMajor = devmajor, hMinor = devminor;
  const bool hHasAtime = hasAtime;
  const timespec hAtime = atime;
  SparseAttrs sparse;  // the GNU.sparse.* records that mean something (others are ignored)
  std::vector<int64_t> offsets;
  bool hasOffsets = false;
  auto apply = [&](const std::string& k, const std::string& v, bool local) {
    if (StartsWith(k, "SCHILY.xattr.")) {
      e.xattrs.Set(k.substr(13), v);
      return;
    }
    if (local && (k == "GNU.sparse.offset" || k == "GNU.sparse.numbytes")) {
      offsets.push_back(PaxInt(k, v));
      hasOffsets = true;
      return;
    }
    if (StartsWith(k, "LIBARCHIVE.xattr.")) {
      e.xattrs.Set(UriDecode(k.substr(17)), Base64Decode(v));
      return;
    }
    bool empty = v.empty();
    if (k == "path") name = empty ? hPrefixed : v;
    else if (k == "linkpath") linkname = empty ? hLink : v;
    else if (k == "size") size = empty ? hSize : PaxInt(k, v);
    else if (k == "uid") uid = empty ? hUid : PaxInt(k, v);
    else if (k == "gid") gid = empty ? hGid : PaxInt(k, v);
    else if (k == "SCHILY.devmajor") devmajor = empty ? hMajor : PaxInt(k, v);
    else if (k == "SCHILY.devminor") devminor = empty ? hMinor : PaxInt(k, v);
    else if (k == "mtime") {
      hasMtime = !empty;
      if (!empty && !ParsePaxTime(v, &mtime)) Bad("PAX record mtime is not a time");
    } else if (k == "atime") {
      if (empty) {
        hasAtime = hHasAtime;
        atime = hAtime;
      } else {
        if (!ParsePaxTime(v, &atime)) Bad("PAX record atime is not a time");
        hasAtime = true;
      }
    } else if (StartsWith(k, "GNU.sparse.")) {
      sparse.Set(k.substr(11), v);
    }
  };
  for (auto& [k, v] : global_) apply(k, v, false);
  for (auto& [k, v] : local_) apply(k, v, true);
  if (has_long_name_) name = long_name_;
  if (has_long_link_) linkname = long_link_;
  if (sparse.name) name = *sparse.name;
  has_long_name_ = has_long_link_ = has_local_pax_ = false;
  long_name_.clear();
  long_link_.clear();
  local_.clear();
  local_bytes_ = 0;
  entry_name_ = name;
  if (!hasMtime) {
    mtime.tv_sec = static_cast<time_t>(headerMtime);
    mtime.tv_nsec = 0;
  }

  char type = 0;
  switch (flag) {
    case '0': case '7': case 'S':
      type = (name.size() > 0 && name.back() == '/' && flag == '0' && !ustar) ? '5' : '0';
      break;
    case '1': case '2': case '3': case '4': case '6': type = flag; break;
    case '5': case 'D': type = '5'; break;
  }
  bool headerOnly = flag >= '1' && flag <= '6';
  int64_t stored = headerOnly ? 0 : size;
  if (type == 0) {
    Skip(stored);  // unknown types (volume labels, continuations, …) are never written
    return;
  }
  e.name = std::move(name);
  e.type = type;
  e.mode = static_cast<uint32_t>(Num(b, 100, 8, "mode") & 07777);
  e.uid = uid;
  e.gid = gid;
  e.size = type == '0' ? size : 0;
  e.mtime = mtime;
  e.atime = atime;
  e.hasAtime = hasAtime;
  e.devmajor = devmajor;
  e.devminor = devminor;
  if (type == '1' || type == '2') e.linkname = std::move(linkname);

  segments_.clear();
  if (type == '0' && flag == 'S') {
    OldGnuSparse(b, std::move(e), stored);
    return;
  }
  if (type == '0' && (sparse.any() || hasOffsets)) {
    if (PaxSparse(e, sparse, hasOffsets, offsets, stored)) return;
  }
  StartEntry(std::move(e), stored);
}

void TarReader::StartEntry(Entry e, int64_t stored) {
  in_entry_ = true;
  bool file = e.type == '0';
  sink_.OnEntry(std::move(e));
  if (file) {
    StartData(stored);
  } else {
    sink_.OnEnd();
    in_entry_ = false;
    Skip(stored);
  }
}

void TarReader::Skip(int64_t bytes) {
  skip_left_ = bytes + static_cast<int64_t>(Padding(bytes));
  state_ = skip_left_ > 0 ? State::kSkip : State::kHeader;
}

void TarReader::StartData(int64_t stored) {
  remaining_ = stored;
  pad_after_ = Padding(stored + map_bytes_);
  map_bytes_ = 0;
  position_ = 0;
  seg_index_ = 0;
  seg_left_ = 0;
  if (!segments_.empty()) NextSegment();
  if (stored == 0) FinishEntry();
  else state_ = State::kData;
}

void TarReader::NextSegment() {
  while (seg_index_ < segments_.size() && segments_[seg_index_].length == 0) seg_index_++;
  if (seg_index_ < segments_.size()) {
    position_ = segments_[seg_index_].offset;
    seg_left_ = segments_[seg_index_].length;
    seg_index_++;
  }
}

void TarReader::Emit(const uint8_t* p, size_t n) {
  if (segments_.empty()) {
    sink_.OnData(p, n, position_);
    position_ += static_cast<int64_t>(n);
    return;
  }
  size_t pos = 0;
  while (pos < n) {
    size_t take = static_cast<size_t>(std::min<int64_t>(seg_left_, static_cast<int64_t>(n - pos)));
    sink_.OnData(p + pos, take, position_);
    position_ += static_cast<int64_t>(take);
    seg_left_ -= static_cast<int64_t>(take);
    pos += take;
    if (seg_left_ == 0) NextSegment();
  }
}

void TarReader::FinishEntry() {
  sink_.OnEnd();
  in_entry_ = false;
  segments_.clear();
  skip_left_ = static_cast<int64_t>(pad_after_);
  state_ = skip_left_ > 0 ? State::kSkip : State::kHeader;
}

// -- GNU sparse --

void TarReader::ReadSparsePairs(const uint8_t* b, size_t off, int count) {
  for (int i = 0; i < count; i++) {
    size_t at = off + static_cast<size_t>(i) * 24;
    if (b[at] == 0) break;
    int64_t o, l;
    if (!ReadNumber(b, at, 12, &o) || !ReadNumber(b, at + 12, 12, &l)) Bad("malformed GNU sparse map");
    segments_.push_back({o, l});
  }
  CheckSegmentCount(segments_.size(), "GNU sparse");
}

void TarReader::CheckSegmentCount(size_t n, const char* format) {
  if (n > TarLimits::kSparseSegments) {
    Bad(std::string("a ") + format + " map of more than " + std::to_string(TarLimits::kSparseSegments) + " entries (limit)");
  }
}

void TarReader::OldGnuSparse(const uint8_t* b, Entry e, int64_t stored) {
  ReadSparsePairs(b, 386, 4);
  int64_t real;
  if (!ReadNumber(b, 483, 12, &real)) Bad("malformed GNU sparse real size");
  e.size = real;
  pending_ = std::move(e);
  pending_stored_ = stored;
  if (b[482]) state_ = State::kSparseExt;
  else EmitSparseEntry();
}

void TarReader::OnSparseExt(const uint8_t* b) {
  ReadSparsePairs(b, 0, 21);
  if (!b[504]) EmitSparseEntry();
}

bool TarReader::PaxSparse(Entry& e, const SparseAttrs& attrs, bool hasOffsets, const std::vector<int64_t>& offsets, int64_t stored) {
  const std::optional<std::string>& realText = attrs.realsize ? attrs.realsize : attrs.size;
  int64_t real = -1;
  bool realOk = realText && ParseDecimal(*realText, &real);
  if (attrs.major && attrs.minor && *attrs.major == "1" && *attrs.minor == "0") {
    if (!realOk) Bad("GNU sparse 1.0 entry without a real size");
    e.size = real;
    pending_ = std::move(e);
    pending_stored_ = stored;
    map_bytes_ = 0;
    map_value_ = 0;
    map_digits_ = 0;
    map_count_ = -1;
    map_have_offset_ = false;
    if (stored == 0) Bad("GNU sparse 1.0 entry without its map");
    state_ = State::kSparseMap;
    return true;
  }
  std::vector<int64_t> numbers;
  if (const std::optional<std::string>& map = attrs.map) {
    if (!map->empty()) {
      size_t start = 0;
      while (true) {
        size_t comma = map->find(',', start);
        std::string part = map->substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        int64_t v = 0;
        if (!part.empty() && !ParseDecimal(part, &v)) Bad("malformed GNU sparse map in a PAX header");
        numbers.push_back(v);
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    }
  } else if (hasOffsets) {
    numbers = offsets;
  } else {
    return false;
  }
  if (!realOk || numbers.size() % 2 != 0) Bad("malformed GNU sparse map in a PAX header");
  CheckSegmentCount(numbers.size() / 2, "GNU sparse");
  for (size_t i = 0; i < numbers.size(); i += 2) segments_.push_back({numbers[i], numbers[i + 1]});
  e.size = real;
  pending_ = std::move(e);
  pending_stored_ = stored;
  EmitSparseEntry();
  return true;
}

// The map is "<count>\n" then "<offset>\n<length>\n" per entry, in as many blocks as it
// needs: each block is parsed as it arrives (one pass, only the line being read kept), and
// the rest of the block after the last line is padding.
void TarReader::OnSparseMapBlock(const uint8_t* b) {
  map_bytes_ += static_cast<int64_t>(kBlock);
  if (map_bytes_ > pending_stored_) Bad("GNU sparse 1.0 map is too long");
  for (size_t i = 0; i < kBlock; i++) {
    uint8_t c = b[i];
    if (c != '\n') {
      if (c < '0' || c > '9') Bad("malformed GNU sparse 1.0 map");
      map_value_ = map_value_ * 10 + (c - '0');
      map_digits_++;
      if (map_value_ > kMaxSafeInteger) Bad("malformed GNU sparse 1.0 map");
      continue;
    }
    if (map_digits_ == 0) Bad("malformed GNU sparse 1.0 map");
    int64_t v = map_value_;
    map_value_ = 0;
    map_digits_ = 0;
    if (map_count_ < 0) {
      if (v > static_cast<int64_t>(TarLimits::kSparseSegments)) {
        Bad("a GNU sparse 1.0 map of " + std::to_string(v) + " entries (limit " + std::to_string(TarLimits::kSparseSegments) + ")");
      }
      map_count_ = v;
    } else if (!map_have_offset_) {
      map_offset_ = v;
      map_have_offset_ = true;
    } else {
      segments_.push_back({map_offset_, v});
      map_have_offset_ = false;
    }
    if (!map_have_offset_ && static_cast<int64_t>(segments_.size()) == map_count_) {
      pending_stored_ -= map_bytes_;
      EmitSparseEntry();
      return;
    }
  }
}

void TarReader::EmitSparseEntry() {
  int64_t end = 0, total = 0;
  for (const Segment& s : segments_) {
    if (s.offset < end || s.length < 0) Bad("GNU sparse map segments overlap or go backwards");
    end = s.offset + s.length;
    total += s.length;
  }
  if (end > pending_.size || total != pending_stored_) {
    Bad("GNU sparse map does not match the entry (map holds " + std::to_string(total) + " bytes, entry " + std::to_string(pending_stored_) + ")");
  }
  sparse_total_ += pending_.size;
  if (sparse_total_ > TarLimits::kSparseTotal) {
    Bad("the sparse files up to this one add up to " + std::to_string(sparse_total_) + " bytes (limit " + std::to_string(TarLimits::kSparseTotal) +
        " for one archive)");
  }
  pending_.sparse = true;
  in_entry_ = true;
  sink_.OnEntry(std::move(pending_));
  pending_ = Entry();
  StartData(pending_stored_);
}

}  // namespace cairn
