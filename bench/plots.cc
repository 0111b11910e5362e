#include "bench/plots.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "bench/stats.h"

namespace walship::bench {
namespace {

namespace fs = std::filesystem;

std::string FileSafe(const std::string& shape) {
  return absl::StrReplaceAll(shape, {{":", "-"}, {",", "_"}, {"/", "_"}});
}

// Colours by system, the same in every plot.
int SystemColour(const std::string& system) {
  if (system == "walship") return 1;
  if (system == "redis") return 2;
  return 3;  // pg
}
const char* kColours =
    "set linetype 1 lc rgb '#1f77b4'\nset linetype 2 lc rgb '#d62728'\n"
    "set linetype 3 lc rgb '#2ca02c'\n";

// "W1/depth:1,commit-off/pg" -> {"W1", "depth:1,commit-off", "pg"}; walship's
// "W1/depth:1/walship-3node" -> system "walship", and its W4 and W5 rows, which name no
// cluster ("W4/catch-up/200000-writes"), too. Baselines (bare RocksDB, one node) give nothing.
struct RowName {
  std::string workload, shape, system;
};
std::optional<RowName> Parse(const std::string& name) {
  std::vector<std::string> p = absl::StrSplit(name, '/');
  if (p.size() < 2) return std::nullopt;
  std::string last = p.back();
  std::string system;
  if (last == "walship-3node" || last == "walship-cluster") system = "walship";
  if (last == "redis" || last == "pg") system = last;
  if (system.empty() && p[0] != "W4" && p[0] != "W5") return std::nullopt;
  std::vector<std::string> middle(p.begin() + 1, system.empty() ? p.end() : p.end() - 1);
  if (middle.empty()) return std::nullopt;
  return RowName{p[0], absl::StrJoin(middle, "/"), system.empty() ? "walship" : system};
}

// Every row of walship's 3-node cluster and of the peers, medians by metric.
struct Medians {
  RowName row;
  std::map<std::string, double> m;
};
std::vector<Medians> AllRows(const std::vector<Aggregate>& walship, const nlohmann::json& peers) {
  std::vector<Medians> out;
  for (const Aggregate& a : walship) {
    auto r = Parse(a.name);
    if (!r) continue;
    Medians m{*r, {{"ops_per_s", Median(a.ops_per_s)}}};
    for (const auto& [k, v] : a.counters) m.m[k] = Median(v);
    out.push_back(std::move(m));
  }
  if (!peers.is_null()) {
    for (const auto& [name, values] : PeerMedians(peers)) {
      auto r = Parse(name);
      if (r) out.push_back({*r, values});
    }
  }
  return out;
}

// A bar per row of `workload` that has `metric`, grouped by walship's shapes (a peer's
// variant "depth:1,commit-off" goes with "depth:1"), coloured by system. Nothing when no row
// has it.
bool Bars(std::ostream& gp, const std::string& dir, const std::string& file,
          const std::string& title, const std::string& ylabel, const std::vector<Medians>& rows,
          const std::vector<std::string>& workloads, const std::string& metric) {
  std::vector<std::string> order;  // shapes, walship's first
  for (const Medians& r : rows) {
    if (std::find(workloads.begin(), workloads.end(), r.row.workload) == workloads.end()) continue;
    std::string group = r.row.workload + "/" + r.row.shape.substr(0, r.row.shape.find(','));
    if (r.row.system == "walship" && std::find(order.begin(), order.end(), group) == order.end()) {
      order.push_back(group);
    }
  }
  for (const Medians& r : rows) {
    if (std::find(workloads.begin(), workloads.end(), r.row.workload) == workloads.end()) continue;
    std::string group = r.row.workload + "/" + r.row.shape.substr(0, r.row.shape.find(','));
    if (std::find(order.begin(), order.end(), group) == order.end()) order.push_back(group);
  }
  std::string data = absl::StrCat(dir, "/data/", file, ".dat");
  std::ofstream d(data);
  double x = 0;
  int bars = 0;
  for (const std::string& group : order) {
    bool any = false;
    for (const char* system : {"walship", "redis", "pg"}) {
      for (const Medians& r : rows) {
        std::string g = r.row.workload + "/" + r.row.shape.substr(0, r.row.shape.find(','));
        auto v = r.m.find(metric);
        if (g != group || r.row.system != system || v == r.m.end() || v->second <= 0) continue;
        std::string label = absl::StrCat(r.row.shape, " ", system);
        if (workloads.size() > 1) label = absl::StrCat(r.row.workload, " ", label);
        d << x << " \"" << label << "\" " << v->second << " " << SystemColour(system) << "\n";
        x += 1;
        any = true;
        ++bars;
      }
    }
    if (any) x += 0.6;  // a gap between shapes
  }
  if (bars == 0) return false;
  gp << "set output '" << dir << "/" << file << ".svg'\nset title '" << title << "'\n"
     << "set ylabel '" << ylabel << "'\nunset xlabel\nunset logscale\nset yrange [0:*]\n"
     << "set style fill solid 0.8\nset boxwidth 0.8\nset xtics rotate by -35 left\n"
     << "set key off\nplot '" << data << "' using 1:3:4:xtic(2) with boxes lc variable, '" << data
     << "' using 1:3:($3 >= 10000 ? sprintf('%.0fk', $3 / 1000) : sprintf('%.3g', $3)) "
     << "with labels offset 0,0.6\n"
     << "set xtics norotate\nset key on\nset yrange [*:*]\n";
  return true;
}

struct Series {
  std::string shape_file, system, follower, path;
};
std::vector<Series> SeriesFiles(const std::string& dir) {
  std::vector<Series> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(dir) / "data", ec)) {
    std::string name = e.path().filename().string();
    if (name.rfind("lag__", 0) != 0 || e.path().extension() != ".dat") continue;
    std::vector<std::string> p = absl::StrSplit(e.path().stem().string(), "__");
    if (p.size() != 4) continue;
    out.push_back({p[1], p[2], p[3], e.path().string()});
  }
  std::sort(out.begin(), out.end(), [](const Series& a, const Series& b) {
    return std::tie(a.shape_file, a.system, a.follower) <
           std::tie(b.shape_file, b.system, b.follower);
  });
  return out;
}

}  // namespace

void WriteLagSeries(const std::string& dir, const std::string& shape, const std::string& system,
                    const LagProbe& probe) {
  fs::create_directories(fs::path(dir) / "data");
  for (const auto& [id, s] : probe.results()) {
    std::ofstream d(
        absl::StrCat(dir, "/data/lag__", FileSafe(shape), "__", system, "__", id, ".dat"));
    for (const auto& [t, lag] : s.series) d << t << " " << lag << "\n";
  }
}

std::string PlotDir(const std::string& dir) {
  std::string d = dir.empty() ? "." : dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return d;
}

bool RunGnuplot(const std::string& dir, const std::string& name, const std::string& script) {
  std::ofstream(dir + "/" + name) << absl::StrReplaceAll(script, {{dir + "/", ""}});
  std::string cmd = absl::StrCat("cd '", dir, "' && gnuplot '", name, "'");
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "gnuplot failed: %s\n", cmd.c_str());
    return false;
  }
  return true;
}

void ClearLagSeries(const std::string& dir_in, const std::string& system) {
  const std::string dir = PlotDir(dir_in);
  for (const Series& s : SeriesFiles(dir)) {
    if (s.system == system) {
      std::error_code ec;
      fs::remove(s.path, ec);
      fs::remove(s.path.substr(0, s.path.size() - 4) + ".cdf", ec);
    }
  }
}

std::vector<std::string> WritePlots(const std::string& dir_in,
                                    const std::vector<Aggregate>& walship,
                                    const nlohmann::json& peers,
                                    const std::map<std::string, std::vector<double>>& latencies) {
  const std::string dir = PlotDir(dir_in);
  fs::create_directories(fs::path(dir) / "data");
  std::vector<std::string> drawn;
  std::ostringstream gp;
  gp << "set terminal svg size 1000,500 dynamic background rgb 'white' noenhanced\n" << kColours;
  std::vector<Medians> rows = AllRows(walship, peers);
  auto bars = [&](const std::string& file, const std::string& title, const std::string& ylabel,
                  const std::vector<std::string>& workloads, const std::string& metric) {
    if (Bars(gp, dir, file, title, ylabel, rows, workloads, metric)) drawn.push_back(file + ".svg");
  };
  bars("throughput", "W1: writes per second (median; higher is better)", "writes/s", {"W1"},
       "ops_per_s");
  bars("lag-p99", "W2: worst follower lag p99 during each W1 shape (lower is better)", "ms",
       {"W2", "W1"}, "lag_p99_ms/worst");
  bars("sync-writes", "W3: latency p50 of a write acknowledged by followers (lower is better)",
       "us", {"W3"}, "p50_us");
  // One plot of W4's catch-up and W5's new follower, both times until the node serves the
  // last key.
  for (Medians& r : rows) {
    const char* from = r.row.workload == "W4" ? "catchup_s" : "until_served_s";
    if (r.m.count(from)) r.m["recovery_s"] = r.m[from];
  }
  bars("recovery",
       "W4: a restarted follower caught up; W5: a new follower serving (lower "
       "is better)",
       "seconds", {"W4", "W5"}, "recovery_s");

  // Lag per shape: walship's shapes, each with the peers' rows of the same shape or a
  // variant.
  std::vector<Series> series = SeriesFiles(dir);
  std::vector<std::string> shapes;
  for (const Series& s : series) {
    if (s.system == "walship" &&
        std::find(shapes.begin(), shapes.end(), s.shape_file) == shapes.end()) {
      shapes.push_back(s.shape_file);
    }
  }
  for (const std::string& shape : shapes) {
    std::vector<const Series*> in;
    for (const Series& s : series) {
      // The shape, a peer's variant of it, or the base of a variant of walship's (a paced
      // "batch-64_rate-44000" beside the peers' "batch-64").
      if (s.shape_file == shape || s.shape_file.rfind(shape + "_", 0) == 0 ||
          (s.system != "walship" && shape.rfind(s.shape_file + "_", 0) == 0)) {
        in.push_back(&s);
      }
    }
    // The CDF: each series' samples sorted, at most 500 points.
    std::string cdf_plot, time_plot;
    for (const Series* s : in) {
      std::vector<std::pair<double, double>> pts;
      std::ifstream f(s->path);
      double t, lag;
      while (f >> t >> lag) pts.push_back({t, lag});
      if (pts.empty()) continue;
      std::vector<double> lags;
      for (const auto& p : pts) lags.push_back(p.second);
      std::sort(lags.begin(), lags.end());
      std::string cdf = s->path.substr(0, s->path.size() - 4) + ".cdf";
      std::ofstream c(cdf);
      size_t step = std::max<size_t>(1, lags.size() / 500);
      for (size_t i = 0; i < lags.size(); i += step)
        c << lags[i] << " " << double(i) / lags.size() << "\n";
      c << lags.back() << " 1\n";
      // A peer's variant of the shape ("depth-1_commit-off") is named by what it adds.
      std::string variant =
          s->shape_file.size() > shape.size() ? s->shape_file.substr(shape.size() + 1) : "";
      std::string title =
          absl::StrCat(s->system, " ", s->follower, variant.empty() ? "" : " (" + variant + ")");
      int dash = s->shape_file == shape ? 1 : 2;
      absl::StrAppend(&cdf_plot, cdf_plot.empty() ? "" : ", ", "'", cdf,
                      "' using 1:2 with lines lt ", SystemColour(s->system), " dt ", dash,
                      " lw 1.5 title '", title, "'");
      absl::StrAppend(&time_plot, time_plot.empty() ? "" : ", ", "'", s->path,
                      "' using 1:2 with lines lt ", SystemColour(s->system), " dt ", dash,
                      " title '", title, "'");
    }
    if (cdf_plot.empty()) continue;
    std::string shown = absl::StrReplaceAll(shape, {{"-", ":"}, {"_", ","}});
    gp << "set output '" << dir << "/lag-cdf-" << shape << ".svg'\n"
       << "set title 'W2: follower lag during W1 " << shown << " (CDF; left is better)'\n"
       << "set logscale x\nset xlabel 'lag (ms)'\nset ylabel 'fraction of "
          "markers'\n"
       << "set key bottom right\nset yrange [0:1]\nplot " << cdf_plot << "\n"
       << "unset logscale\nset yrange [*:*]\n";
    gp << "set output '" << dir << "/lag-time-" << shape << ".svg'\n"
       << "set title 'W2: follower lag during W1 " << shown << ", over time'\n"
       << "set logscale y\nset xlabel 'seconds into the run'\nset ylabel 'lag "
          "(ms)'\n"
       << "set key top right\nplot " << time_plot << "\nunset logscale\n";
    drawn.push_back("lag-cdf-" + shape + ".svg");
    drawn.push_back("lag-time-" + shape + ".svg");
  }

  bool any_latency = false;
  for (const auto& [name, v] : latencies) any_latency |= !v.empty();
  if (any_latency) {
    gp << "set output '" << dir << "/latency.svg'\nset title 'walship W1: request latency (CDF)'\n"
       << "set logscale x\nset xlabel 'latency (us)'\nset ylabel 'fraction of "
          "requests'\n"
       << "set key bottom right\nset yrange [0:1]\nplot ";
    bool first = true;
    int n = 0;
    for (const auto& [name, v] : latencies) {
      std::vector<double> s = v;
      std::sort(s.begin(), s.end());
      if (s.empty()) continue;
      std::string file = absl::StrCat(dir, "/data/latency-", n++, ".dat");
      std::ofstream d(file);
      size_t step = std::max<size_t>(1, s.size() / 500);
      for (size_t i = 0; i < s.size(); i += step) d << s[i] << " " << double(i) / s.size() << "\n";
      d << s.back() << " 1\n";
      gp << (first ? "" : ", ") << "'" << file << "' using 1:2 with lines title '" << name << "'";
      first = false;
    }
    gp << "\nunset logscale\nset yrange [*:*]\n";
    drawn.push_back("latency.svg");
  }
  if (!RunGnuplot(dir, "plots.gp", gp.str())) return {};
  return drawn;
}

}  // namespace walship::bench
