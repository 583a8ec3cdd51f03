package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"lifeline/internal/status"
)

// words are the mail's own sentences, per language; status names and the
// update's headings come from status.Label, as on the page.
var words = map[status.Lang]map[string]string{
	status.English: {
		"components":    "Affected components",
		"follow":        "Follow the incident",
		"why":           "You receive this because you subscribed to %s updates.",
		"unsubscribe":   "Unsubscribe (one click)",
		"confirm.subj":  "Confirm your subscription to %s",
		"confirm.email": "Someone, hopefully you, asked to receive %s updates at %s.\n\nTo confirm, open this link within 7 days:\n%s\n\nIf it was not you, ignore this mail: nothing is sent until the subscription is confirmed.",
		"confirm.hook":  "Someone, hopefully you, asked to send %s updates to the webhook\n%s\nand named you as its owner.\n\nTo confirm, open this link within 7 days; the page then shows the secret that signs every delivery:\n%s\n\nIf it was not you, ignore this mail: nothing is sent until the webhook is confirmed.",
		"disabled.subj": "Webhook disabled: %s",
		"disabled.body": "%s stopped sending updates to the webhook\n%s\nbecause %s.\n\nUpdates published while it is disabled are not sent to it. Once the endpoint works again, subscribe it again to resume:\n%s",
	},
	status.Chinese: {
		"components":    "受影响的服务组件",
		"follow":        "查看事件详情",
		"why":           "您收到此邮件是因为您订阅了 %s 的状态更新。",
		"unsubscribe":   "退订（一键）",
		"confirm.subj":  "请确认订阅 %s",
		"confirm.email": "有人（希望是您本人）请求将 %s 的状态更新发送到 %s。\n\n请在 7 天内打开以下链接确认：\n%s\n\n如果不是您本人的操作，请忽略此邮件：确认之前我们不会发送任何内容。",
		"confirm.hook":  "有人（希望是您本人）请求将 %s 的状态更新发送到 Webhook\n%s\n并指定您为其负责人。\n\n请在 7 天内打开以下链接确认；确认页面会显示用于签名每次推送的密钥：\n%s\n\n如果不是您本人的操作，请忽略此邮件：确认之前我们不会发送任何内容。",
		"disabled.subj": "Webhook 已停用：%s",
		"disabled.body": "%s 已停止向 Webhook\n%s\n发送更新，原因：%s。\n\n停用期间发布的更新不会发送给它。端点恢复正常后，请重新订阅：\n%s",
	},
}

func word(lang status.Lang, key string) string {
	if s, ok := words[lang][key]; ok {
		return s
	}
	return words[status.English][key]
}

// renderNotice builds the message one subscriber gets for one update.
func (s *Service) renderNotice(ctx context.Context, sub status.Subscriber, a noticeJob) (Message, error) {
	r, err := s.update(ctx, a.IncidentID, a.UpdateID)
	if err != nil {
		return Message{}, err
	}
	unsub, err := s.status.UnsubscribeToken(ctx, sub.ID)
	if err != nil {
		return Message{}, err
	}
	unsubURL := s.cfg.PublicURL + "/unsubscribe?token=" + url.QueryEscape(unsub)
	incURL := s.cfg.PublicURL + "/#incident-" + r.inc.ID
	if sub.Channel == status.ChannelWebhook {
		body, err := webhookPayload(r, s.cfg.PageName, s.cfg.PublicURL, incURL, unsubURL)
		if err != nil {
			return Message{}, err
		}
		return Message{ID: "notice_" + a.UpdateID + "_" + sub.ID, To: sub.Address, Body: body, Secret: sub.Secret}, nil
	}
	lang := sub.Lang
	inc, u := r.inc, r.update
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n%s · %s\n\n", inc.Name.In(lang), status.Label(lang, string(u.Status)), u.Created.UTC().Format("2006-01-02 15:04 UTC"))
	b.WriteString(u.Body.Plain(lang))
	b.WriteString("\n\n")
	if len(u.Changes) > 0 {
		var parts []string
		for _, c := range u.Changes {
			name := c.ComponentID
			for _, ac := range inc.Affected {
				if ac.ComponentID == c.ComponentID {
					name = ac.Name.In(lang)
				}
			}
			parts = append(parts, name+": "+status.Label(lang, string(c.Status)))
		}
		fmt.Fprintf(&b, "%s: %s\n\n", word(lang, "components"), strings.Join(parts, "; "))
	}
	fmt.Fprintf(&b, "%s: %s\n\n-- \n", word(lang, "follow"), incURL)
	fmt.Fprintf(&b, word(lang, "why")+"\n", s.cfg.PageName)
	fmt.Fprintf(&b, "%s: %s\n", word(lang, "unsubscribe"), unsubURL)
	return Message{
		ID:      messageID("notice:"+a.UpdateID+":"+sub.ID, s.fromDomain()),
		To:      sub.Address,
		Subject: fmt.Sprintf("[%s] %s: %s", s.cfg.PageName, inc.Name.In(lang), status.Label(lang, string(u.Status))),
		Text:    b.String(),
		// RFC 8058: mail clients show an unsubscribe button that POSTs here.
		Header: map[string]string{"List-Unsubscribe": "<" + unsubURL + ">", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
	}, nil
}

// WebhookEvent is the JSON body of every webhook delivery, in the Standard
// Webhooks shape: a type, a timestamp and the data.
type WebhookEvent struct {
	Type      string      `json:"type"` // incident.update or maintenance.update
	Timestamp time.Time   `json:"timestamp"`
	Data      WebhookData `json:"data"`
}

// WebhookData is what changed: the incident and the update, with the
// update's template parts as published.
type WebhookData struct {
	Page struct {
		Name string `json:"name"`
		URL  string `json:"url"`
	} `json:"page"`
	Incident struct {
		ID        string                     `json:"id"`
		Name      status.Text                `json:"name"`
		Kind      status.Kind                `json:"kind"`
		Impact    status.Impact              `json:"impact"`
		Status    status.IncidentStatus      `json:"status"`
		URL       string                     `json:"url"`
		Affected  []status.AffectedComponent `json:"affected_components"`
		CreatedAt time.Time                  `json:"created_at"`
	} `json:"incident"`
	Update struct {
		ID        string                   `json:"id"`
		Status    status.IncidentStatus    `json:"status"`
		Body      string                   `json:"body"`
		BodyZh    string                   `json:"body_zh"`
		Template  status.Body              `json:"template"`
		Changes   []status.ComponentChange `json:"component_changes"`
		CreatedAt time.Time                `json:"created_at"`
	} `json:"update"`
	UnsubscribeURL string `json:"unsubscribe_url"`
}

func webhookPayload(r *renderedUpdate, page, pageURL, incURL, unsubURL string) ([]byte, error) {
	var ev WebhookEvent
	ev.Type = string(r.inc.Kind) + ".update"
	ev.Timestamp = r.update.Created
	d := &ev.Data
	d.Page.Name, d.Page.URL = page, pageURL
	d.Incident.ID, d.Incident.Name, d.Incident.Kind, d.Incident.Impact = r.inc.ID, r.inc.Name, r.inc.Kind, r.inc.Impact
	d.Incident.Status, d.Incident.URL, d.Incident.Affected, d.Incident.CreatedAt = r.update.Status, incURL, r.inc.Affected, r.inc.Created
	u := r.update
	d.Update.ID, d.Update.Status, d.Update.Template, d.Update.Changes, d.Update.CreatedAt = u.ID, u.Status, u.Body, u.Changes, u.Created
	d.Update.Body, d.Update.BodyZh = u.Body.Plain(status.English), u.Body.Plain(status.Chinese)
	d.UnsubscribeURL = unsubURL
	return json.Marshal(ev)
}

// confirmMail is the double opt-in mail for a new subscription.
func (s *Service) confirmMail(p *status.Pending) mailJob {
	sub, lang := p.Subscriber, p.Subscriber.Lang
	link := s.cfg.PublicURL + "/subscribe/confirm?token=" + url.QueryEscape(p.Token)
	text := fmt.Sprintf(word(lang, "confirm.email"), s.cfg.PageName, sub.Address, link)
	if sub.Channel == status.ChannelWebhook {
		text = fmt.Sprintf(word(lang, "confirm.hook"), s.cfg.PageName, sub.Address, link)
	}
	return mailJob{Key: "confirm:" + sub.ID + ":" + tokenTag(p.Token), What: "confirm", To: p.ConfirmTo,
		Subject: fmt.Sprintf(word(lang, "confirm.subj"), s.cfg.PageName), Text: text, SubscriberID: sub.ID}
}

// disabledMail tells a webhook's owner it was disabled; run identifies the
// run of failures, so it is sent once per run.
func (s *Service) disabledMail(sub status.Subscriber, reason, run string) mailJob {
	lang := sub.Lang
	return mailJob{Key: "disabled:" + sub.ID + ":" + run, What: "disabled", To: sub.OwnerEmail,
		Subject: fmt.Sprintf(word(lang, "disabled.subj"), sub.Address),
		Text:    fmt.Sprintf(word(lang, "disabled.body"), s.cfg.PageName, sub.Address, reason, s.cfg.PublicURL+"/subscribe")}
}

// tokenTag tells two confirmation links of one subscriber apart without
// putting the token in the key.
func tokenTag(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:6])
}
