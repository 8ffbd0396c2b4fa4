package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// measuredPhases are the phases shown in the latency table, in cycle order,
// then the two halves of the cycle (added after the seven original lines so
// that parsers of those keep working).
var measuredPhases = []phase{phCreate, phStage, phPublish, phUnpublish, phUnstage, phDelete, phCycle, phUp, phDown}

// reportedPhases are the phases a CSI run reports.
var reportedPhases = measuredPhases

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

func perSecond(n int, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return float64(n) / wall.Seconds()
}

// printReport prints one aligned key=value line per phase (grep '^phase='),
// a summary line, and one line per (phase, gRPC code) that had errors.
func printReport(w io.Writer, res *result) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, p := range res.phases {
		st := &res.stats[p]
		s := st.samples.Summary()
		fmt.Fprintf(tw, "phase=%s\tcount=%d\terrors=%d\tretries=%d\tp50_ms=%s\tp90_ms=%s\tp99_ms=%s\tmax_ms=%s\tops_per_s=%.1f\n",
			p, s.Count, st.failed, st.retries, ms(s.P50), ms(s.P90), ms(s.P99), ms(s.Max), perSecond(s.Count, res.wall))
	}
	tw.Flush()

	cyc := &res.stats[phCycle]
	fmt.Fprintf(w, "summary cycles=%d ok=%d failed=%d wall_s=%.3f cycles_per_s=%.1f errors=%d retries=%d local_errors=%d leftover_targets=%d existing_created=%d existing_deleted=%d\n",
		cyc.samples.Len()+cyc.failed, cyc.samples.Len(), cyc.failed, res.wall.Seconds(),
		perSecond(cyc.samples.Len(), res.wall), res.totalErrors(), res.totalRetries(),
		res.localErrors, res.leftovers,
		res.stats[phExistingCreate].samples.Len(), res.stats[phExistingDelete].samples.Len())

	for p := range numPhases {
		st := &res.stats[p]
		for _, c := range st.sortedCodes() {
			fmt.Fprintf(w, "error phase=%s code=%s count=%d example=%q\n", p, c, st.codes[c], st.examples[c])
		}
	}
}

type jsonPhase struct {
	Phase        string         `json:"phase"`
	Count        int            `json:"count"`
	Errors       int            `json:"errors"`
	Retries      int            `json:"retries"`
	P50us        float64        `json:"p50_us"`
	P90us        float64        `json:"p90_us"`
	P99us        float64        `json:"p99_us"`
	MaxUs        float64        `json:"max_us"`
	OpsPerSecond float64        `json:"ops_per_second"`
	ErrorCodes   map[string]int `json:"error_codes,omitempty"`
}

type jsonReport struct {
	Plugin          string  `json:"plugin"`
	Version         string  `json:"version"`
	NodeID          string  `json:"node_id"`
	Stage           bool    `json:"stage"`
	AccessType      string  `json:"access_type"`
	Size            int64   `json:"size"`
	N               int     `json:"n"`
	C               int     `json:"c"`
	E               int     `json:"e"`
	WallSeconds     float64 `json:"wall_seconds"`
	Cycles          int     `json:"cycles"`
	CyclesOK        int     `json:"cycles_ok"`
	CyclesFailed    int     `json:"cycles_failed"`
	CyclesPerSecond float64 `json:"cycles_per_second"`
	Errors          int     `json:"errors"`
	Retries         int     `json:"retries"`
	LocalErrors     int     `json:"local_errors"`
	LeftoverTargets int     `json:"leftover_targets"`
	ExistingCreated int     `json:"existing_created"`
	ExistingDeleted int     `json:"existing_deleted"`
	Interrupted     bool    `json:"interrupted"`
	// Floor is true for a --floor run: no plugin, the same work done with
	// losetup, mkfs and mount directly.
	Floor  bool        `json:"floor,omitempty"`
	Phases []jsonPhase `json:"phases"`
	// SetupPhases covers creation/deletion of pre-existing volumes, outside
	// the measured section (ops_per_second is therefore 0).
	SetupPhases []jsonPhase `json:"setup_phases,omitempty"`
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func toJSONPhase(p phase, st *phaseStats, wall time.Duration) jsonPhase {
	s := st.samples.Summary()
	jp := jsonPhase{
		Phase: p.String(), Count: s.Count, Errors: st.failed, Retries: st.retries,
		P50us: us(s.P50), P90us: us(s.P90), P99us: us(s.P99), MaxUs: us(s.Max),
		OpsPerSecond: perSecond(s.Count, wall),
	}
	for _, c := range st.sortedCodes() {
		if jp.ErrorCodes == nil {
			jp.ErrorCodes = map[string]int{}
		}
		jp.ErrorCodes[c.String()] = st.codes[c]
	}
	return jp
}

// printJSON prints the result as a single-line JSON object.
func printJSON(w io.Writer, res *result) error {
	cyc := &res.stats[phCycle]
	jr := jsonReport{
		Plugin: res.info.name, Version: res.info.version, NodeID: res.info.nodeID,
		Stage: res.info.useStage, AccessType: res.cfg.accessType, Size: res.cfg.size,
		N: res.cfg.n, C: res.cfg.c, E: res.cfg.e,
		WallSeconds:     res.wall.Seconds(),
		Cycles:          cyc.samples.Len() + cyc.failed,
		CyclesOK:        cyc.samples.Len(),
		CyclesFailed:    cyc.failed,
		CyclesPerSecond: perSecond(cyc.samples.Len(), res.wall),
		Errors:          res.totalErrors(),
		Retries:         res.totalRetries(),
		LocalErrors:     res.localErrors,
		LeftoverTargets: res.leftovers,
		ExistingCreated: res.stats[phExistingCreate].samples.Len(),
		ExistingDeleted: res.stats[phExistingDelete].samples.Len(),
		Interrupted:     res.interrupted,
		Floor:           res.floor,
	}
	for _, p := range res.phases {
		jr.Phases = append(jr.Phases, toJSONPhase(p, &res.stats[p], res.wall))
	}
	if !res.floor {
		for _, p := range []phase{phExistingCreate, phExistingDelete} {
			jr.SetupPhases = append(jr.SetupPhases, toJSONPhase(p, &res.stats[p], 0))
		}
	}
	b, err := json.Marshal(jr)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
