// How the layer applier (untar.cc) writes ownership and devices when the process cannot do
// everything root can: entries' owners shifted by id maps (container -> host, as
// containers/storage stores user-namespaced layers), chown refusals dropped on request
// (ignoreChownErrors: rootless with a single id), and device nodes that cannot be made
// (EPERM in a user namespace) recorded as placeholders the packer turns back into devices.
// One object, asked at the few places the applier chowns or makes a device.
#pragma once

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "idmap.h"

namespace cairn {

// The xattr containers/storage and fuse-overlayfs use for "the stat this file stands
// for" where it cannot be real: "uid:gid:mode:type", mode in octal, type here
// `char-<major>-<minor>` or `block-<major>-<minor>`. The placeholder itself is an empty
// regular file with mode 0000.
constexpr const char* kOverrideStatXattr = "user.containers.override_stat";

inline std::string OverrideStatValue(int64_t uid, int64_t gid, uint32_t mode, bool block, int64_t major, int64_t minor) {
  char m[8];
  snprintf(m, sizeof(m), "%04o", mode & 07777);
  return std::to_string(uid) + ":" + std::to_string(gid) + ":" + m + ":" + (block ? "block-" : "char-") +
         std::to_string(major) + "-" + std::to_string(minor);
}

// Parses an OverrideStatValue of a device; false for anything else (other types, junk).
inline bool ParseOverrideStat(const std::string& v, int64_t* uid, int64_t* gid, uint32_t* mode, bool* block, int64_t* major, int64_t* minor) {
  unsigned long long u, g, ma, mi;
  unsigned int mo;
  char kind[8] = {0};
  int used = 0;
  if (sscanf(v.c_str(), "%llu:%llu:%o:%5[a-z]-%llu-%llu%n", &u, &g, &mo, kind, &ma, &mi, &used) != 6 ||
      static_cast<size_t>(used) != v.size()) {
    return false;
  }
  std::string k(kind);
  if (k != "char" && k != "block") return false;
  *uid = static_cast<int64_t>(u);
  *gid = static_cast<int64_t>(g);
  *mode = mo & 07777;
  *block = k == "block";
  *major = static_cast<int64_t>(ma);
  *minor = static_cast<int64_t>(mi);
  return true;
}

struct OwnerPolicy {
  IdShift maps;                    // empty: owners as in the tar
  bool ignoreChownErrors = false;  // a refused chown (EPERM/EINVAL) or an owner outside the maps leaves the caller's owner
  int64_t chownsDropped = 0;
  std::string firstDropped;        // "path uid:gid" of the first one, for the report
  int64_t devicesRecorded = 0;
  std::string firstDevice;

  // The entry's owner as stored: shifted container -> host. False when the maps do not
  // cover it (the caller fails, or drops the chown under ignoreChownErrors).
  bool Map(int64_t* uid, int64_t* gid) const {
    if (maps.empty()) return true;
    int64_t u, g;
    if (!IdShift::Map(maps.uids, *uid, true, &u) || !IdShift::Map(maps.gids, *gid, true, &g)) return false;
    *uid = u;
    *gid = g;
    return true;
  }

  // After a chown failed with `err`: true when it is to be dropped (and counted).
  bool Drop(int err, const std::string& rel, int64_t uid, int64_t gid) {
    if (!ignoreChownErrors || (err != EPERM && err != EINVAL && err != EOVERFLOW)) return false;
    if (chownsDropped++ == 0) firstDropped = rel + " " + std::to_string(uid) + ":" + std::to_string(gid);
    return true;
  }

  void Recorded(const std::string& rel) {
    if (devicesRecorded++ == 0) firstDevice = rel;
  }
};

}  // namespace cairn
