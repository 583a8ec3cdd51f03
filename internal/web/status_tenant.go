package web

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"slices"

	"lifeline/internal/status"
)

// The private page of one tenant during an incident, opened from the
// signed, expiring link in a targeted notice: the tenant's lifecycle state,
// how far its restore is, how to reach support (also without signing in),
// and the incident's updates. It is read per request (it is one tenant's,
// and rare next to the public page), never cached by anyone (the URL is a
// capability), and refuses forged (400) and expired (410) links.

var tenantWords = map[status.Lang]map[string]string{
	status.English: {
		"title": "Your site's status", "site": "Site %s", "expires": "This private link is valid until %s.",
		"lifecycle": "Your site in each product", "live": "As of now.", "recorded": "As last recorded, on %s.",
		"nostate": "Not known at the moment.", "restore": "Restore of your site", "restoredof": "%d of %d products restored and verified.",
		"incident": "The incident", "nosupport": "See the public status page.", "public": "Public status page",
		"errorhelp": "The public status page has the latest updates and how to reach support.",
		"active":    "active", "deactivated": "deactivated (access blocked, data untouched)", "deleted": "deleted (data kept, can be restored)",
		"purged": "purged", "restored-pending-validation": "restored, awaiting validation",
		status.StepWaiting: "waiting to be restored", status.StepRestored: "restored and verified against the backup",
		status.StepFailed: "restore failed; the team is on it", status.StepNotRestored: "not restored", status.StepUndone: "restore undone",
	},
	status.Chinese: {
		"title": "您站点的状态", "site": "站点 %s", "expires": "此私人链接有效期至 %s。",
		"lifecycle": "您的站点在各产品中的状态", "live": "当前状态。", "recorded": "最近一次记录于 %s。",
		"nostate": "暂时无法获取。", "restore": "您站点的恢复进度", "restoredof": "%[2]d 个产品中已恢复并验证 %[1]d 个。",
		"incident": "事件", "nosupport": "请查看公开状态页面。", "public": "公开状态页面",
		"errorhelp": "公开状态页面提供最新进展和联系支持的方式。",
		"active":    "正常", "deactivated": "已停用（访问被阻止，数据未动）", "deleted": "已删除（数据保留，可恢复）",
		"purged": "已彻底清除", "restored-pending-validation": "已恢复，待验证",
		status.StepWaiting: "等待恢复", status.StepRestored: "已恢复并已与备份逐行核对",
		status.StepFailed: "恢复失败，团队正在处理", status.StepNotRestored: "未恢复", status.StepUndone: "恢复已撤销",
	},
}

// tenantWord is a word of the private page, falling back to the public
// page's words and the domain's labels.
func tenantWord(lang status.Lang, k string) string {
	if s, ok := tenantWords[lang][k]; ok {
		return s
	}
	if s, ok := tenantWords[status.English][k]; ok {
		return s
	}
	return word(lang, k)
}

var tenantTemplates = map[status.Lang]*template.Template{}

func init() {
	for _, lang := range []status.Lang{status.English, status.Chinese} {
		funcs := template.FuncMap{"t": func(k string) string { return tenantWord(lang, k) }}
		// page.html comes along for its "updates" block, so an update reads
		// the same on the private page as on the public one.
		tenantTemplates[lang] = template.Must(template.New("tenant.html").Funcs(funcs).
			ParseFS(statusAssets, "status_assets/tenant.html", "status_assets/page.html"))
	}
}

type tenantPageView struct {
	Lang, Name, Token, Error string
	Tenant, Expires          string
	Support, NoLogin         string
	States                   []tenantStateView
	StatesAsOf               string
	Restore                  []tenantStateView
	RestoreSummary           string
	Incident                 incidentView
	Resolved                 bool
}

type tenantStateView struct{ Product, State, Text, Finished string }

func (p *StatusPage) tenantView(v *status.TenantView, lang status.Lang) tenantPageView {
	out := tenantPageView{Tenant: v.Tenant, Expires: showTime(v.Expires), Support: v.Support.In(lang), NoLogin: v.SupportNoLogin.In(lang),
		Incident: incidentViewOf(*v.Incident, lang), Resolved: v.Incident.Status.Closed()}
	products := make([]string, 0, len(v.States))
	for p := range v.States {
		products = append(products, p)
	}
	slices.Sort(products)
	for _, prod := range products {
		st := v.States[prod]
		out.States = append(out.States, tenantStateView{Product: prod, State: st, Text: tenantWord(lang, st)})
	}
	out.StatesAsOf = tenantWord(lang, "live")
	if !v.StatesAsOf.IsZero() {
		out.StatesAsOf = fmt.Sprintf(tenantWord(lang, "recorded"), showTime(v.StatesAsOf))
	}
	done := 0
	for _, s := range v.Restore {
		sv := tenantStateView{Product: s.Product, State: s.State, Text: tenantWord(lang, s.State)}
		if !s.Finished.IsZero() {
			sv.Finished = showTime(s.Finished)
		}
		if s.State == status.StepRestored {
			done++
		}
		out.Restore = append(out.Restore, sv)
	}
	out.RestoreSummary = fmt.Sprintf(tenantWord(lang, "restoredof"), done, len(v.Restore))
	return out
}

// tenantPage serves GET /tenant-status?t=TOKEN.
func (p *StatusPage) tenantPage(w http.ResponseWriter, r *http.Request) {
	lang := pageLang(w, r)
	token := r.URL.Query().Get("t")
	v, err := p.Service.TenantView(r.Context(), token)
	var view tenantPageView
	code := http.StatusOK
	if err != nil {
		code, view.Error = p.publicError(r, err)
	} else {
		view = p.tenantView(v, lang)
		view.Token = token
	}
	view.Lang, view.Name = string(lang), p.Name
	var buf bytes.Buffer
	if err := tenantTemplates[lang].Execute(&buf, view); err != nil {
		p.log().Error("tenant status page", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	// The URL is a capability: not cached, not indexed, not sent on.
	privatePage(w.Header())
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("X-Robots-Tag", "noindex")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}
