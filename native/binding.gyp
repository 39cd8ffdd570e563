# The kvmchan native addon: plain C over Node-API (NAPI_VERSION 8), no C++ and no node-addon-api.
# Built offline by `npm run build:native` (node-gyp with --nodedir pointing at the
# installed Node's headers; nothing is downloaded).
{
  "variables": { "werror%": "<!(node -p \"process.env.KVMCHAN_WERROR === '1' ? 1 : 0\")" },
  "targets": [
    {
      "target_name": "kvmchan_native",
      "sources": [
        "src/addon.c",
        "src/args.c",
        "src/copy.c",
        "src/errors.c",
        "src/eventfd.c",
        "src/fdutil.c",
        "src/identity.c",
        "src/ioctl.c",
        "src/memfd.c",
        "src/mmap.c",
        "src/poller.c",
        "src/socket.c"
      ],
      "include_dirs": ["../clib/src"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags": ["-Wall", "-Wextra", "-O2"],
      # Warnings are errors in a checkout (scripts/install.mjs sets KVMCHAN_WERROR=1), never
      # when a user installs the package: a newer compiler must not break an install.
      "conditions": [["werror==1", { "cflags": ["-Werror"] }]],
      "cflags_c": ["-std=gnu11"],
      "cflags!": ["-O3"],
      "ldflags": ["-Wl,-z,now", "-Wl,-z,relro"]
    }
  ]
}
