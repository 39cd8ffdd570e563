# The kvmchan native addon: plain C over Node-API (docs/architecture.md, "The native addon").
# Built offline by `npm run build:native` (node-gyp with --nodedir pointing at the
# installed Node's headers; nothing is downloaded).
{
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
        "src/ioctl.c",
        "src/memfd.c",
        "src/mmap.c",
        "src/poller.c",
        "src/socket.c"
      ],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-O2"],
      "cflags_c": ["-std=gnu11"],
      "cflags!": ["-O3"],
      "ldflags": ["-Wl,-z,now", "-Wl,-z,relro"]
    }
  ]
}
