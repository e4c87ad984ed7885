package main

import (
	"math"
	"slices"
	"time"
)

// Latency summarizes a set of durations, in microseconds.
type Latency struct {
	N    int     `json:"n"`
	Min  float64 `json:"min"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// percentile returns the nearest-rank p-th percentile (0 < p ≤ 100) of sorted, or 0 for
// an empty slice: the smallest value with at least p% of the values at or below it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

// summarize sorts ds in place and returns its summary.
func summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	us := func(d time.Duration) float64 { return round(float64(d)/float64(time.Microsecond), 1) }
	return Latency{
		N:    len(ds),
		Min:  us(ds[0]),
		P50:  us(percentile(ds, 50)),
		P90:  us(percentile(ds, 90)),
		P99:  us(percentile(ds, 99)),
		P999: us(percentile(ds, 99.9)),
		Max:  us(ds[len(ds)-1]),
		Mean: us(sum / time.Duration(len(ds))),
	}
}

// round rounds x to the given number of decimals.
func round(x float64, decimals int) float64 {
	p := math.Pow(10, float64(decimals))
	return math.Round(x*p) / p
}

// median returns the median of xs (the mean of the middle two for an even count), or NaN
// for none. xs is not modified.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
