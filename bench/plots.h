// The benchmark's plots (gnuplot, SVG): walship beside Redis and PostgreSQL in the same plot.
// Lag series go to files first (walship-bench and walship-peers both write them, into the
// same directory), so that one drawing step finds every system's series.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/lag_probe.h"
#include "bench/report.h"

namespace walship::bench {

// Writes the probe's series as <dir>/data/lag__SHAPE__SYSTEM__FOLLOWER.dat, one "seconds
// lag_ms" per line (SHAPE with ':' and ',' made safe for file names). `system`: walship,
// redis, pg.
void WriteLagSeries(const std::string& dir, const std::string& shape, const std::string& system,
                    const LagProbe& probe);

// Removes `system`'s series files from <dir>/data, so that an earlier run's are not drawn.
void ClearLagSeries(const std::string& dir, const std::string& system);

// Draws into `dir`, and returns the files drawn:
// - throughput.svg: W1 ops/s per shape, a bar per system (and per peer variant
// of the shape);
// - lag-p99.svg: W2's worst follower p99 per shape, idle included;
// - sync-writes.svg: W3 latency p50 per level;
// - recovery.svg: W4 catch-up and W5 new-follower times;
// - lag-cdf-SHAPE.svg and lag-time-SHAPE.svg: every system's followers' lag
// during that shape,
//   as a CDF and over time, from the series files in <dir>/data;
// - latency.svg: walship's W1 request latency CDF per shape (`latencies`).
// `peers` is walship-peers' JSON (or null).
std::vector<std::string> WritePlots(const std::string& dir, const std::vector<Aggregate>& walship,
                                    const nlohmann::json& peers,
                                    const std::map<std::string, std::vector<double>>& latencies);

// `dir` without a trailing slash, so that the paths built from it match (the plot scripts
// name files relative to it).
std::string PlotDir(const std::string& dir);

// Writes `script` as DIR/NAME with every path under DIR made relative to it, and runs gnuplot
// on it from DIR: the script, and the SVGs, name no path of the machine that drew them.
// False (logged) when gnuplot fails.
bool RunGnuplot(const std::string& dir, const std::string& name, const std::string& script);

}  // namespace walship::bench
