// Id maps (container id -> host id ranges, as the OCI runtime spec writes them) in the addon:
// shared by the user-namespace maker (userns.cc), the ownership shift of a tree, the layer
// applier (untar.cc: ownership shifted on the way in) and the packer (tarpack.cc: shifted
// back on the way out). Pure lookups; parsing from JS lives in userns.cc.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

namespace cairn {

struct IdRange {
  int64_t container = 0, host = 0, size = 0;
};

// A uid map and a gid map. Empty maps = no shift (identity).
struct IdShift {
  std::vector<IdRange> uids, gids;

  bool empty() const { return uids.empty() && gids.empty(); }

  // The id `id` maps to, container -> host (toHost) or host -> container; false when no
  // range holds it (an id the namespace cannot represent).
  static bool Map(const std::vector<IdRange>& ranges, int64_t id, bool toHost, int64_t* out) {
    for (const IdRange& r : ranges) {
      int64_t from = toHost ? r.container : r.host;
      if (id >= from && id - from < r.size) {
        *out = (toHost ? r.host : r.container) + (id - from);
        return true;
      }
    }
    return false;
  }
};

// Reads `{ uidMap: IdMap[], gidMap: IdMap[] }` (IdMap = { containerId, hostId, size }) at
// argument `i`; null or undefined = empty. Throws TypeError naming the bad field.
IdShift ArgIdShift(const Napi::CallbackInfo& info, size_t i, const char* name);

// The "c h s\n" lines /proc/<pid>/uid_map takes.
std::string IdMapText(const std::vector<IdRange>& ranges);

}  // namespace cairn
