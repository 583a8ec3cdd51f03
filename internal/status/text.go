package status

import (
	"fmt"
	"strconv"
	"strings"

	"lifeline/internal/fault"
)

// labels are the headings of the template's parts and the names of the
// statuses, per language. They are domain text: the same words head an
// update on the page, in the JSON body, in the feed and in notices.
var labels = map[Lang]map[string]string{
	English: {
		"affected": "Affected", "timeline": "Recovery timeline", "fuller": "A fuller picture is expected by",
		"restored": "Sites restored", "verified": "from verified restores", "dataloss": "Data loss",
		"support": "How to reach support", "nologin": "If you cannot sign in", "known": "What we know",
		"unknown": "What we do not know yet", "confidence": "confidence",
		"low": "low", "medium": "medium", "high": "high",
		string(Operational): "Operational", string(DegradedPerformance): "Degraded performance",
		string(PartialOutage): "Partial outage", string(MajorOutage): "Major outage", string(UnderMaintenance): "Under maintenance",
		string(Investigating): "Investigating", string(Identified): "Identified", string(Monitoring): "Monitoring",
		string(Resolved): "Resolved", string(Postmortem): "Postmortem", string(Scheduled): "Scheduled",
		string(InProgress): "In progress", string(Verifying): "Verifying", string(Completed): "Completed",
	},
	Chinese: {
		"affected": "受影响范围", "timeline": "恢复时间预估", "fuller": "预计获得更完整信息的时间",
		"restored": "已恢复站点", "verified": "来自已验证的恢复", "dataloss": "数据丢失",
		"support": "联系支持", "nologin": "如果您无法登录", "known": "已知情况",
		"unknown": "尚不清楚的情况", "confidence": "可信度",
		"low": "低", "medium": "中", "high": "高",
		string(Operational): "正常运行", string(DegradedPerformance): "性能下降",
		string(PartialOutage): "部分中断", string(MajorOutage): "严重中断", string(UnderMaintenance): "维护中",
		string(Investigating): "调查中", string(Identified): "已确定原因", string(Monitoring): "监控中",
		string(Resolved): "已解决", string(Postmortem): "事后分析", string(Scheduled): "已计划",
		string(InProgress): "进行中", string(Verifying): "验证中", string(Completed): "已完成",
	},
}

// Label returns the heading for key in lang (English if unknown).
func Label(lang Lang, key string) string {
	if s, ok := labels[lang][key]; ok {
		return s
	}
	return labels[English][key]
}

// Section is one titled part of an update, ready to show.
type Section struct {
	Key   string // situation, affected, timeline, restored, dataloss, support, known, unknown
	Title string // empty for the situation
	Text  string
}

// Sections renders b in lang as titled parts, skipping empty ones, in the
// template's order. The page, the JSON body and the feed all use it, so an
// update reads the same everywhere.
func (b Body) Sections(lang Lang) []Section {
	var out []Section
	add := func(key, title, text string) {
		if strings.TrimSpace(text) != "" {
			out = append(out, Section{Key: key, Title: title, Text: text})
		}
	}
	conf := func(c Confidence) string {
		if c == "" {
			return ""
		}
		return fmt.Sprintf(" (%s: %s)", Label(lang, "confidence"), Label(lang, string(c)))
	}
	add("situation", "", b.Situation.In(lang))
	if len(b.AffectedGroups) > 0 {
		parts := make([]string, len(b.AffectedGroups))
		for i, g := range b.AffectedGroups {
			parts[i] = fmt.Sprintf("%s %s: %d", g.Kind, g.Name, g.Count)
		}
		add("affected", Label(lang, "affected"), strings.Join(parts, "; "))
	}
	if t := b.Timeline.In(lang); t != "" || !b.FullerPictureAt.IsZero() {
		if t != "" {
			t += conf(b.TimelineConfidence)
		}
		if !b.FullerPictureAt.IsZero() {
			t = strings.TrimSpace(t + " " + Label(lang, "fuller") + " " + b.FullerPictureAt.UTC().Format("2006-01-02 15:04 UTC") + ".")
		}
		add("timeline", Label(lang, "timeline"), t)
	}
	if p := b.PercentRestored; p != nil {
		t := strconv.FormatFloat(*p, 'f', -1, 64) + "%"
		if b.PercentSource == "verified_restores" {
			t += " (" + Label(lang, "verified") + ")"
		}
		add("restored", Label(lang, "restored"), t+conf(b.PercentConfidence))
	}
	if t := b.DataLoss.In(lang); t != "" {
		add("dataloss", Label(lang, "dataloss"), t+conf(b.DataLossConfidence))
	}
	support := b.Support.In(lang)
	if nl := b.SupportNoLogin.In(lang); nl != "" {
		support = strings.TrimSpace(support + " " + Label(lang, "nologin") + ": " + nl)
	}
	add("support", Label(lang, "support"), support)
	add("known", Label(lang, "known"), b.Known.In(lang))
	add("unknown", Label(lang, "unknown"), b.Unknown.In(lang))
	return out
}

// Plain renders b in lang as plain text with one paragraph per part: the
// "body" of a Statuspage incident update.
func (b Body) Plain(lang Lang) string {
	var sb strings.Builder
	for i, s := range b.Sections(lang) {
		if i > 0 {
			sb.WriteString("\n\n")
		}
		if s.Title != "" {
			sb.WriteString(s.Title + ": ")
		}
		sb.WriteString(s.Text)
	}
	return sb.String()
}

// ParseComponentChange reads "NAME=STATUS", as the CLI and the console
// form take component changes, for example "tracker=major_outage".
func ParseComponentChange(s string) (ComponentChange, error) {
	name, st, ok := strings.Cut(strings.TrimSpace(s), "=")
	if !ok || strings.TrimSpace(name) == "" {
		return ComponentChange{}, fault.New(fault.Invalid, "write a component change as NAME=STATUS, e.g. tracker=major_outage", "bad component change %q", s)
	}
	cs, err := ParseComponentStatus(strings.TrimSpace(st))
	if err != nil {
		return ComponentChange{}, err
	}
	return ComponentChange{ComponentID: strings.TrimSpace(name), Status: cs}, nil
}

// ParseAffectedGroup reads "KIND NAME COUNT", for example
// "product tracker 883"; the name may contain spaces.
func ParseAffectedGroup(s string) (AffectedGroup, error) {
	f := strings.Fields(s)
	if len(f) >= 3 {
		if n, err := strconv.Atoi(f[len(f)-1]); err == nil && n >= 0 {
			return AffectedGroup{Kind: f[0], Name: strings.Join(f[1:len(f)-1], " "), Count: n}, nil
		}
	}
	return AffectedGroup{}, fault.New(fault.Invalid, "write an affected group as KIND NAME COUNT, e.g. product tracker 883", "bad affected group %q", strings.TrimSpace(s))
}
