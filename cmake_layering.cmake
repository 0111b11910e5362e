# Fails the configure step when a part includes what it may not (ARCHITECTURE.md):
#   engine/      -> RocksDB, Abseil
#   replication/ -> engine/, Abseil (never Cap'n Proto/KJ, never RocksDB directly)
#   rpc/         -> replication/, engine/, Cap'n Proto/KJ
# tools/, bench/ and tests/ may use everything.
function(walship_check_layering part)
  set(forbidden ${ARGN})
  file(GLOB_RECURSE files "${PROJECT_SOURCE_DIR}/${part}/*.h" "${PROJECT_SOURCE_DIR}/${part}/*.cc")
  foreach(f IN LISTS files)
    file(STRINGS "${f}" lines REGEX "^[ \t]*#[ \t]*include")
    foreach(line IN LISTS lines)
      foreach(bad IN LISTS forbidden)
        if(line MATCHES "[<\"]${bad}")
          message(FATAL_ERROR "layering violation: ${f} includes '${bad}...' (${line}); "
                              "${part}/ may not use it (see ARCHITECTURE.md)")
        endif()
      endforeach()
    endforeach()
  endforeach()
endfunction()

walship_check_layering(engine "replication/" "rpc/" "tools/" "kj/" "capnp/")
walship_check_layering(replication "rpc/" "tools/" "kj/" "capnp/" "rocksdb/")
walship_check_layering(rpc "tools/" "rocksdb/")
