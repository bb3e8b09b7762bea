package events_test

import (
	"strings"
	"testing"

	"github.com/cordonhq/cordon/pkg/events"
)

// realAgents are user agents as real clients send them, with the client
// NormalizeClient must report.
var realAgents = []struct{ name, ua, want string }{
	// Browsers say "Mozilla", and most say "Safari" and "Chrome" as well.
	{"chrome windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", "Chrome/124"},
	{"chrome android", "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36", "Chrome/124"},
	{"chrome ios", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1", "Chrome/124"},
	{"chrome mac", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36", "Chrome/123"},
	{"edge windows (says Chrome and Safari too)", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0", "Edge/124"},
	{"edge android", "Mozilla/5.0 (Linux; Android 10; HD1913) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36 EdgA/124.0.2478.62", "Edge/124"},
	{"edge ios", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 EdgiOS/124.2478.61 Mobile/15E148 Safari/605.1.15", "Edge/124"},
	{"legacy edge", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.19582", "Edge/18"},
	{"opera", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 OPR/110.0.0.0", "Opera/110"},
	{"samsung internet", "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36", "SamsungBrowser/24"},
	{"headless chrome", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.6367.60 Safari/537.36", "HeadlessChrome/124"},
	{"firefox windows", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0", "Firefox/126"},
	{"firefox linux", "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0", "Firefox/125"},
	{"firefox ios", "Mozilla/5.0 (iPhone; CPU iPhone OS 14_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/126.0 Mobile/15E148 Safari/605.1.15", "Firefox/126"},
	{"safari mac", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15", "Safari/17"},
	{"safari iphone", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1", "Safari/17"},
	{"ie 11", "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko", "IE/11"},
	{"ie 10", "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.1; Trident/6.0)", "IE/10"},
	{"googlebot", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "Googlebot/2"},
	{"bingbot", "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "bingbot/2"},
	{"ios web view", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148", "Mozilla/5"},

	// Tools, SDKs and libraries.
	{"curl 8", "curl/8.5.0", "curl/8"},
	{"curl 7", "curl/7.81.0", "curl/7"},
	{"wget", "Wget/1.21.2", "Wget/1"},
	{"python requests", "python-requests/2.31.0", "python-requests/2"},
	{"python urllib", "Python-urllib/3.11", "Python-urllib/3"},
	{"python aiohttp", "Python/3.11 aiohttp/3.9.1", "aiohttp/3"},
	{"python httpx", "python-httpx/0.27.0", "python-httpx/0"},
	{"go http/1", "Go-http-client/1.1", "Go-http-client/1"},
	{"go http/2", "Go-http-client/2.0", "Go-http-client/2"},
	{"okhttp", "okhttp/4.12.0", "okhttp/4"},
	{"aws sdk go", "aws-sdk-go/1.50.0 (go1.21.6; linux; amd64)", "aws-sdk-go/1"},
	{"aws sdk go v2", "aws-sdk-go-v2/1.24.1 os/linux lang/go#1.21.6 md/GOOS#linux md/GOARCH#amd64 api/sts#1.26.7", "aws-sdk-go-v2/1"},
	{"boto3", "Boto3/1.34.34 md/Botocore#1.34.34 ua/2.0 os/linux#6.5.0 md/arch#x86_64 lang/python#3.11.7 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.34", "Boto3/1"},
	{"aws cli", "aws-cli/2.15.17 Python/3.11.6 Linux/6.5.0-1014-aws exe/x86_64.ubuntu.22 prompt/off command/s3.ls", "aws-cli/2"},
	{"terraform through APN", "APN/1.0 HashiCorp/1.0 Terraform/1.7.2 (+https://www.terraform.io) terraform-provider-aws/5.35.0 (+https://registry.terraform.io/providers/hashicorp/aws) aws-sdk-go/1.50.8 (go1.21.6; linux; amd64)", "Terraform/1"},
	{"java", "Java/17.0.10", "Java/17"},
	{"java http client", "Java-http-client/17.0.10", "Java-http-client/17"},
	{"apache http client", "Apache-HttpClient/4.5.14 (Java/17.0.10)", "Apache-HttpClient/4"},
	{"node-fetch", "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", "node-fetch/1"},
	{"node fetch (undici)", "node", "node"},
	{"axios", "axios/1.6.7", "axios/1"},
	{"postman", "PostmanRuntime/7.36.3", "PostmanRuntime/7"},
	{"insomnia", "insomnia/8.6.1", "insomnia/8"},
	{"httpie", "HTTPie/3.2.2", "HTTPie/3"},
	{"kube-probe", "kube-probe/1.29", "kube-probe/1"},
	{"prometheus", "Prometheus/2.49.1", "Prometheus/2"},
	{"grpc-go", "grpc-go/1.61.0", "grpc-go/1"},
	{"dalvik", "Dalvik/2.1.0 (Linux; U; Android 13; Pixel 7 Build/TQ3A.230901.001)", "Dalvik/2"},
	{"slackbot (no slash)", "Slackbot 1.0 (+https://api.slack.com/robots)", "Slackbot"},
	{"github hookshot (hash version)", "GitHub-Hookshot/8ad1b9a", "GitHub-Hookshot/8"},
	{"cordon's own tests", "cordon-test/1", "cordon-test/1"},

	// Odd and hostile input.
	{"empty", "", ""},
	{"blank", " \t ", ""},
	{"surrounding space", "  curl/8.5.0  ", "curl/8"},
	{"comment only", "(compatible)", events.ClientOther},
	{"punctuation only", "/// ;;; ()", events.ClientOther},
	{"no version", "x/", "x"},
	{"word version", "tool/latest", "tool/latest"},
	{"v version", "tool/v2.3.1", "tool/v2"},
	{"markup in the name", "<script>/1.0", "script/1"},
	{"control byte", "curl\x00/8.1", "curl/8"},
	{"non-ascii name", "Télé/2.0", "Tl/2"},
	{"long name", strings.Repeat("a", 300) + "/1.0", strings.Repeat("a", 48) + "/1"},
	{"long version", "x/" + strings.Repeat("9", 40), "x/" + strings.Repeat("9", 12)},
	{"token as the agent", "cordon_eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJqdGkiOiIx.c2lnbmF0dXJl.abc123", events.ClientOther},
	{"token glued to a name", "Xcordon_eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJqdGkiOiIx/1", events.ClientOther},
	{"token as a crawler", "Mozilla/5.0 (compatible; cordon_eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0/1)", events.ClientOther},
	{"bearer word first", "Bearer cordon_eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0", "Bearer"},
	{"python alone", "Python/3.11", "Python/3"},
	{"python before a comment", "Python/3.11 (linux)", "Python/3"},
	{"chrome lookalike", "Mozilla/5.0 NotChrome/99.0", "Mozilla/5"},
}

func TestNormalizeClient(t *testing.T) {
	for _, c := range realAgents {
		t.Run(c.name, func(t *testing.T) {
			got := events.NormalizeClient(c.ua)
			if got != c.want {
				t.Errorf("NormalizeClient(%q) = %q, want %q", c.ua, got, c.want)
			}
			checkClient(t, c.ua, got)
		})
	}
}

// checkClient asserts the properties every normalised client has.
func checkClient(t *testing.T, ua, got string) {
	t.Helper()
	if len(got) > events.MaxClientLen {
		t.Fatalf("NormalizeClient(%q) = %q: %d bytes, more than %d", ua, got, len(got), events.MaxClientLen)
	}
	if (got == "") != (strings.TrimSpace(ua) == "") {
		t.Fatalf("NormalizeClient(%q) = %q: empty exactly when the agent is blank", ua, got)
	}
	if strings.Count(got, "/") > 1 || strings.HasPrefix(got, "/") || strings.HasSuffix(got, "/") {
		t.Fatalf("NormalizeClient(%q) = %q: want name or name/major", ua, got)
	}
	for i := 0; i < len(got); i++ {
		c := got[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-/", c) >= 0) {
			t.Fatalf("NormalizeClient(%q) = %q: byte %q outside the safe set", ua, got, c)
		}
	}
	if strings.Contains(got, "cordon_") {
		t.Fatalf("NormalizeClient(%q) = %q: carries a piece of a token", ua, got)
	}
	if again := events.NormalizeClient(got); again != got {
		t.Fatalf("NormalizeClient(%q) = %q, but NormalizeClient(%q) = %q: not stable", ua, got, got, again)
	}
}

// TestNormalizeClientAllocs: the common clients come out as substrings of
// the user agent, so the per-decision cost is the scan alone.
func TestNormalizeClientAllocs(t *testing.T) {
	for _, ua := range []string{
		"curl/8.5.0",
		"python-requests/2.31.0",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0",
	} {
		if n := testing.AllocsPerRun(100, func() { events.NormalizeClient(ua) }); n != 0 {
			t.Errorf("NormalizeClient(%q): %v allocations", ua, n)
		}
	}
}

// FuzzNormalizeClient: whatever the agent, the result is bounded, in the
// safe character set, free of token pieces and stable. Seeds are the real
// agents above and testdata/fuzz/FuzzNormalizeClient.
func FuzzNormalizeClient(f *testing.F) {
	for _, c := range realAgents {
		f.Add(c.ua)
	}
	f.Fuzz(func(t *testing.T, ua string) {
		checkClient(t, ua, events.NormalizeClient(ua))
	})
}

func BenchmarkNormalizeClient(b *testing.B) {
	for _, c := range []struct{ name, ua string }{
		{"curl", "curl/8.5.0"},
		{"boto3", "Boto3/1.34.34 md/Botocore#1.34.34 ua/2.0 os/linux#6.5.0 md/arch#x86_64 lang/python#3.11.7 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.34"},
		{"chrome", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"},
		{"edge", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0"},
		{"safari", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				events.NormalizeClient(c.ua)
			}
		})
	}
}
