set terminal svg size 900,450 dynamic background rgb 'white'
set output 'bench-plots/lag.svg'
set title 'W2: follower lag during W1 (one write per round trip)'
set xlabel 'seconds into the run'
set ylabel 'lag (ms)'
plot 'bench-plots/lag-n2.dat' using 1:2 with linespoints title 'follower n2', 'bench-plots/lag-n3.dat' using 1:2 with linespoints title 'follower n3'
set output 'bench-plots/latency.svg'
set title 'W1 write latency (CDF)'
set logscale x
set xlabel 'latency (us)'
set ylabel 'fraction of writes'
set key bottom right
plot 'bench-plots/latency-0.dat' using 1:2 with lines title 'pipeline:64, walship-3node'
