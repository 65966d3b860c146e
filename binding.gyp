{
  "targets": [
    {
      "target_name": "lazyrestore",
      "sources": [
        "native/src/addon.cc",
        "native/src/errors.cc",
        "native/src/memfd.cc",
        "native/src/sysv_shm.cc",
        "native/src/uffd.cc",
        "native/src/page_service.cc",
        "native/src/page_service_lazymap.cc",
        "native/src/page_service_loop.cc",
        "native/src/page_service_source.cc",
        "native/src/ptrace.cc",
        "native/src/ptrace_ops.cc",
        "native/src/ptrace_state.cc",
        "native/src/pidfd.cc",
        "native/src/probe.cc",
        "native/src/custody.cc",
        "native/src/page_service_custody.cc",
        "native/src/restore.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++20", "-fexceptions", "-Wall", "-Wextra", "-O2"],
      "ldflags": ["-pthread"]
    },
    {
      "target_name": "lazyrestore_restorer",
      "type": "none",
      "actions": [
        {
          "action_name": "link_restorer",
          "inputs": ["native/restorer/restorer.S"],
          "outputs": ["<(PRODUCT_DIR)/lazyrestore-restorer"],
          "action": ["cc", "-nostdlib", "-static", "-no-pie", "-Wl,--build-id=none", "-o", "<@(_outputs)", "<@(_inputs)"]
        }
      ]
    },
    {
      "target_name": "lazyrestore_keeper",
      "type": "none",
      "actions": [
        {
          "action_name": "link_keeper",
          "inputs": ["native/keeper/keeper.c"],
          "outputs": ["<(PRODUCT_DIR)/lazyrestore-keeper"],
          "action": ["cc", "-O2", "-Wall", "-Wextra", "-o", "<@(_outputs)", "<@(_inputs)"]
        }
      ]
    }
  ]
}
