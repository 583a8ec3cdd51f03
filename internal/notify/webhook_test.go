package notify

import (
	"strings"
	"testing"
	"time"
)

func TestWebhookSignatures(t *testing.T) {
	t.Parallel()
	// The example of the Standard Webhooks specification.
	secret, id, body := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", []byte(`{"test": 2432232314}`)
	ts := time.Unix(1614265330, 0)
	sig, err := SignWebhook(secret, id, ts, body)
	if err != nil {
		t.Fatal(err)
	}
	if sig != "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=" {
		t.Fatalf("signature = %s", sig)
	}
	if err := VerifyWebhook(secret, id, "1614265330", "v1,old= "+sig, body, ts.Add(time.Minute)); err != nil {
		t.Fatalf("valid delivery refused: %v", err)
	}
	for name, err := range map[string]error{
		"tampered body": VerifyWebhook(secret, id, "1614265330", sig, []byte(`{"test": 1}`), ts),
		"other id":      VerifyWebhook(secret, "msg_other", "1614265330", sig, body, ts),
		"replayed late": VerifyWebhook(secret, id, "1614265330", sig, body, ts.Add(WebhookTolerance+time.Second)),
		"other secret":  VerifyWebhook("whsec_"+strings.Repeat("A", 32), id, "1614265330", sig, body, ts),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
