{
  "targets": [
    {
      "target_name": "cairn_sys",
      "sources": ["native/addon.cc", "native/errors.cc", "native/mount.cc", "native/files.cc", "native/durable.cc", "native/btrfs.cc", "native/quota.cc", "native/untar.cc", "native/tar_reader.cc", "native/tar_fields.cc", "native/beneath.cc", "native/applier.cc", "native/nofollow.cc", "native/walk.cc", "native/tarpack.cc", "native/openfile.cc", "native/userns.cc", "native/atcalls.cc", "native/removetree.cc", "native/sha256.cc", "native/split_record.cc", "native/record_gzip.cc", "native/nodevview.cc", "native/zstd.cc", "native/zstd_lib.cc", "native/node_zlib.cc", "native/input_decoder.cc", "native/split_replay.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "ldflags": ["-pthread"],
      "libraries": ["-ldl"]
    }
  ]
}
