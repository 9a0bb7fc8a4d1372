// libFuzzer entry point for the layer applier: each input is a tar, applied (tar_reader,
// applier, beneath: the addon's own code, no Node) into a fresh directory under
// $CAIRN_FUZZ_TMP (default /tmp), in a whiteout mode chosen by the input's length, which
// is then removed. A Failure (ERR_INVALID_ARCHIVE, ERR_UNSAFE_ARCHIVE, a refused syscall)
// is the expected answer to a bad tar; what the fuzzer hunts is a crash, a sanitizer
// report, a hang, or an entry written outside the directory (checked: the directory's
// parent must hold nothing but the directory).
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "../native/applier.h"
#include "../native/untar_errors.h"

namespace {

int RemoveOne(const char* path, const struct stat*, int, struct FTW*) {
  remove(path);
  return 0;
}

void RemoveTree(const std::string& path) {
  nftw(path.c_str(), RemoveOne, 64, FTW_DEPTH | FTW_PHYS);
}

size_t CountEntries(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (!d) abort();
  size_t n = 0;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") n++;
  }
  closedir(d);
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* base = getenv("CAIRN_FUZZ_TMP");
  std::string tmpl = std::string(base ? base : "/tmp") + "/cairn-fuzz-XXXXXX";
  if (!mkdtemp(tmpl.data())) abort();
  std::string root = tmpl + "/layer";
  if (mkdir(root.c_str(), 0755) != 0) abort();
  auto mode = static_cast<cairn::Whiteouts>(size % 3);
  try {
    cairn::Applier a(root, mode, /*noDevices=*/true, /*ownership=*/geteuid() == 0, geteuid(), getegid(), 022, /*legacy=*/false);
    // Every other input goes through the image import's pass too (hash, tar-split record,
    // logical-size cap), cut in two so the record sees content slices across chunks.
    bool tapped = (size / 3) % 2 == 0;
    if (tapped) a.Tap(int64_t{1} << 30, "fuzz layer", /*portableHash=*/true, /*gzipRecords=*/false);
    try {
      if (tapped) {
        a.Write(data, size / 2);
        a.Write(data + size / 2, size - size / 2);
      } else {
        a.Write(data, size);
      }
      a.Finish();
      if (tapped) {
        a.record()->Finish();
        a.record()->TakeWith([](const char* p, size_t n) { return n > 0 ? p[n - 1] : 0; });
        if (a.hash()->HexDigest().size() != 64) abort();
      }
    } catch (const cairn::Failure&) {
      a.Abort();
    }
  } catch (const cairn::Failure&) {
  }
  // Nothing may land beside the layer directory.
  if (CountEntries(tmpl) != 1) {
    fprintf(stderr, "an entry was written outside the layer directory\n");
    abort();
  }
  RemoveTree(tmpl);
  return 0;
}
