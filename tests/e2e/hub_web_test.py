#!/usr/bin/python3
"""The hub's web pages, driven by a real headless Chromium against a real hub.

A real `fedpod hub serve` over HTTPS (a development CA), users registered and models
pushed with the `fedpod` CLI, and then the seed's flow in the browser:

  1. alice signs in and finds the model she pushed through the CLI on My Models, with
     both versions, their sha256, the source and the diff between them;
  2. olivia, who owns pod-a, gives bob the General Modeller role on the Pods page;
  3. bob opens alice's model card, clicks Request Access, picks pod-a and version 1,
     states a purpose and confirms a page that names exactly that version;
  4. olivia finds the request in her inbox, reads the version's source on the page and
     approves it until a date; a real pod (`fedpod worker`, policy from the hub) then
     runs bob's coordinator job with that model;
  5. bob asks for version 2; olivia sees the diff from version 1 (what pod-a approved)
     and rejects it with a reason, which bob reads on My requests.

Then what an attacker would try: forms without or with another session's CSRF token,
bob approving or granting himself a role by crafting the request, bob opening the
owner's pages, `<script>` in a description, a purpose and a source file, the session
cookie's attributes, signing out. Every page is screenshotted at 1280 and 390 px
(FEDPOD_SCREENSHOTS=DIR keeps them; docs/hub-web/ holds the committed ones) and must
not overflow the viewport's width.

Needs: FEDPOD_BIN (the fedpod binary), FEDPOD_SOURCE_DIR, /usr/bin/chromium and
/usr/bin/chromedriver (Debian chromium, chromium-driver), python3-selenium.
"""
import datetime
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

from e2e_util import clean_env, public_key, read, start_hub, write
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

FEDPOD = os.environ.get("FEDPOD_BIN", "")
SOURCE_DIR = os.environ.get("FEDPOD_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
SHOTS = os.environ.get("FEDPOD_SCREENSHOTS", "")

XSS_SOURCE = '# <script>window.__xss = "source"</script> <img src=x onerror="window.__xss=\'img\'">\n'
XSS_PURPOSE = 'digits study <script>window.__xss = "purpose"</script> & <b>bold</b>'
XSS_DESCRIPTION = '8x8 digits CNN <script>window.__xss = "description"</script>'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HubWebTest(unittest.TestCase):
    """One scenario in order (each step needs the last one's state)."""

    @classmethod
    def setUpClass(cls):
        if not FEDPOD or not os.access(FEDPOD, os.X_OK):
            raise RuntimeError("FEDPOD_BIN must name the fedpod binary (ctest sets it)")
        cls.dir = tempfile.mkdtemp(prefix="hub-web-")
        cls.procs = []
        cls.env = clean_env(cls.dir)
        cls.shots = SHOTS or os.path.join(cls.dir, "screenshots")
        os.makedirs(cls.shots, exist_ok=True)
        os.makedirs(cls.path("keys"))
        cls.run_ok(["tls", "dev-ca", "--out", cls.path("tls")])
        cls.ca = cls.path("tls", "ca.crt")
        hub, cls.port = start_hub(FEDPOD, cls.dir, cls.env, ["--tls-cert", cls.path("tls", "hub.crt"),
                                                              "--tls-key", cls.path("tls", "hub.key")])
        cls.procs.append(hub)
        cls.url = "https://127.0.0.1:%d" % cls.port
        cls.ssl = ssl.create_default_context(cafile=cls.ca)

        cls.tokens = {}
        for user in ("alice", "bob", "olivia"):
            cls.run_ok(["keys", "generate", "--out", cls.path("keys", user)])
            out = cls.run_ok(["user", "register", user, "--key-file", cls.path("keys", user + ".key"),
                              "--hub", cls.url, "--hub-ca", cls.ca, "--json"])
            cls.tokens[user] = json.loads(out)["token"]

        # alice's model: two versions (different weights, version 2 adds a line).
        script = os.path.join(SOURCE_DIR, "examples", "torchscript_model", "digits_net.py")
        cls.source_v1 = read(script) + XSS_SOURCE
        cls.source_v2 = cls.source_v1 + "# version 2: also reads /etc/passwd (the owner should notice)\n"
        cls.pushed = {}
        for v, source in ((1, cls.source_v1), (2, cls.source_v2)):
            artifact = cls.path("digits_net_v%d.pt" % v)
            subprocess.run(["/usr/bin/python3", script, "--out", artifact, "--seed", str(v)], check=True,
                           stdout=subprocess.DEVNULL)
            src = cls.path("v%d" % v, "digits_net.py")
            os.makedirs(os.path.dirname(src))
            write(src, source)
            out = cls.as_user("alice", ["model", "push", "alice/digits-net", "--format", "torchscript",
                                        "--artifact", artifact, "--source", src, "--description",
                                        XSS_DESCRIPTION, "--visibility", "public", "--json"])
            cls.pushed[v] = json.loads(out)
        assert cls.pushed[1]["sha256"] != cls.pushed[2]["sha256"]

        # olivia's pod: its key, its registration, its read-only token.
        cls.pod_port = free_port()
        cls.run_ok(["keys", "generate", "--out", cls.path("keys", "pod-a")])
        pod_pub = public_key(cls.path("keys", "pod-a.pub"))
        cls.as_user("olivia", ["pod", "register", "pod-a", "--address", "tcp://127.0.0.1:%d" % cls.pod_port,
                               "--public-key", pod_pub])
        cls.as_user("olivia", ["pod", "token", "pod-a", "--out", cls.path("keys", "pod-a.token")])

        options = webdriver.ChromeOptions()
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1280,900", "--ignore-certificate-errors", "--hide-scrollbars"):
            options.add_argument(arg)
        options.binary_location = "/usr/bin/chromium"
        options.accept_insecure_certs = True
        cls.browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        cls.browser.set_page_load_timeout(60)

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "browser", None):
            cls.browser.quit()
        for p in cls.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        if os.environ.get("FEDPOD_KEEP_TMP"):
            print("kept", cls.dir, file=sys.stderr)
        else:
            shutil.rmtree(cls.dir, ignore_errors=True)

    # --- helpers ---

    @classmethod
    def path(cls, *parts):
        return os.path.join(cls.dir, *parts)

    @classmethod
    def run_ok(cls, args, timeout=120):
        p = subprocess.run([FEDPOD] + args, env=cls.env, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise AssertionError("fedpod %s exited %d:\n%s\n%s" % (" ".join(args), p.returncode, p.stdout, p.stderr))
        return p.stdout

    @classmethod
    def as_user(cls, user, args):
        return cls.run_ok(args + ["--hub", cls.url, "--hub-ca", cls.ca, "--token", cls.tokens[user]])

    @classmethod
    def start(cls, args, log):
        with open(cls.path(log), "w") as out:
            p = subprocess.Popen([FEDPOD] + args, env=cls.env, stdout=out, stderr=subprocess.STDOUT)
        cls.procs.append(p)
        return p

    def api(self, user, path):
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ssl, timeout=30)
        conn.request("GET", path, headers={"Authorization": "Bearer " + self.tokens[user]})
        r = conn.getresponse()
        body = r.read()
        self.assertEqual(r.status, 200, body)
        return json.loads(body)

    def raw(self, method, path, cookie=None, form=None):
        """One request outside the browser: (status, headers, body)."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ssl, timeout=30)
        headers = {"Accept": "text/html"}
        body = None
        if cookie:
            headers["Cookie"] = cookie
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.getheaders(), r.read().decode()

    def session(self, user):
        """Signs `user` in outside the browser: (Cookie header, the session's CSRF token)."""
        status, headers, body = self.raw("GET", "/signin")
        self.assertEqual(status, 200)
        signin = dict(headers)["Set-Cookie"].split(";")[0]
        csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', body).group(1)
        status, headers, _ = self.raw("POST", "/signin", cookie=signin,
                                      form={"csrf": csrf, "token": self.tokens[user], "next": "/models"})
        self.assertEqual(status, 303)
        cookie = [v for k, v in headers if k == "Set-Cookie" and v.startswith("fedpod_session=")][0].split(";")[0]
        status, _, body = self.raw("GET", "/models", cookie=cookie)
        self.assertEqual(status, 200)
        return cookie, re.search(r'name="csrf" value="([0-9a-f]{64})"', body).group(1)

    def click(self, by, value):
        """Clicks what submits a form or follows a link, and waits for the next page."""
        old = self.browser.find_element(By.TAG_NAME, "html")
        self.browser.find_element(by, value).click()

        def replaced(_):
            # The old page's root is gone once the next page loaded. chromedriver says so
            # with StaleElementReferenceException, or, when it asks while the old
            # document is being torn down, with "Node with given id does not belong to
            # the document" (a plain WebDriverException).
            try:
                old.is_enabled()
                return False
            except StaleElementReferenceException:
                return True
            except WebDriverException as e:
                if "does not belong to the document" in str(e):
                    return True
                raise

        WebDriverWait(self.browser, 30).until(replaced)
        WebDriverWait(self.browser, 30).until(
            lambda b: b.execute_script("return document.readyState") == "complete")

    def go(self, path):
        self.browser.get(self.url + path)

    def text(self, css):
        return self.browser.find_element(By.CSS_SELECTOR, css).text

    def sign_in(self, user):
        self.browser.delete_all_cookies()
        self.go("/signin")
        self.browser.find_element(By.ID, "token").send_keys(self.tokens[user])
        self.click(By.ID, "signin")
        self.assertEqual(self.text("#whoami"), user)

    def source_lines(self):
        """The source files on the page, as {name: text}."""
        files = {}
        for section in self.browser.find_elements(By.CSS_SELECTOR, "section.file:not(.diff-file)"):
            name = section.find_element(By.CSS_SELECTOR, ".file-name").text.split(" (")[0]
            cells = section.find_elements(By.CSS_SELECTOR, "td.code")
            files[name] = "\n".join(c.get_attribute("textContent") for c in cells) + "\n"
        return files

    def assert_no_script_ran(self):
        self.assertIsNone(self.browser.execute_script("return window.__xss === undefined ? null : window.__xss"))
        self.assertEqual(self.browser.find_elements(By.CSS_SELECTOR, "main script, main img"), [])

    def shot(self, name):
        """Screenshots at 1280 and 390 px; the page must fit the width at both."""
        for width in (1280, 390):
            self.browser.set_window_size(width, 900)
            inner = self.browser.execute_script("return window.innerWidth")
            scroll = self.browser.execute_script("return document.documentElement.scrollWidth")
            self.assertLessEqual(scroll, inner, "%s overflows %d px (%d px wide)" % (name, width, scroll))
            height = self.browser.execute_script("return document.documentElement.scrollHeight")
            self.browser.set_window_size(width, max(600, min(height + 40, 3000)))
            self.browser.save_screenshot(os.path.join(self.shots, "%s-%d.png" % (name, width)))
        self.browser.set_window_size(1280, 900)

    # --- the scenario ---

    def test_1_modeller_sees_her_models_versions_source_and_diff(self):
        self.go("/models")
        self.assertIn("/signin", self.browser.current_url)  # not signed in yet
        self.shot("signin")
        self.sign_in("alice")
        self.assertTrue(self.browser.current_url.endswith("/models"))
        row = self.text("#my-models tbody tr")
        self.assertIn("alice/digits-net", row)
        self.assertIn("v2", row)
        self.assertIn("public", row)
        self.assertIn("torchscript", row)
        self.assertIn(XSS_DESCRIPTION, row)  # shown as text
        self.assert_no_script_ran()
        self.shot("my-models")

        self.click(By.LINK_TEXT, "alice/digits-net")
        versions = self.browser.find_elements(By.CSS_SELECTOR, "#versions tbody tr")
        self.assertEqual(len(versions), 2)
        for v, row in zip((1, 2), versions):
            self.assertIn("v%d" % v, row.text)
            self.assertIn(self.pushed[v]["sha256"], row.text)
        self.assertEqual(self.text("#source-title"), "Source of v2")
        self.assertEqual(self.source_lines(), {"digits_net.py": self.source_v2})
        self.assert_no_script_ran()
        self.shot("model-card")

        Select(self.browser.find_element(By.ID, "diff-from")).select_by_value("1")
        Select(self.browser.find_element(By.ID, "diff-to")).select_by_value("2")
        self.click(By.CSS_SELECTOR, "#diff-form button")
        added = [[c.get_attribute("textContent") for c in r.find_elements(By.TAG_NAME, "td")]
                 for r in self.browser.find_elements(By.CSS_SELECTOR, "#diff tr.add")]
        self.assertEqual(added, [["", str(self.source_v2.count("\n")),
                                  "+# version 2: also reads /etc/passwd (the owner should notice)"]])
        self.assertEqual(self.browser.find_elements(By.CSS_SELECTOR, "#diff tr.del"), [])
        self.shot("diff")

    def test_2_owner_grants_a_role_on_the_pods_page(self):
        self.sign_in("olivia")
        self.go("/pods")
        self.assertIn("pod-a", self.text("#my-pods"))
        self.click(By.LINK_TEXT, "pod-a")
        self.assertTrue(self.browser.find_elements(By.ID, "no-roles"))
        self.browser.find_element(By.ID, "grant-user").send_keys("bob")
        Select(self.browser.find_element(By.ID, "grant-role")).select_by_value("general-modeller")
        self.click(By.ID, "grant")
        self.assertIn("general-modeller", self.text("#role-bob"))
        roles = self.api("olivia", "/api/v1/pods/pod-a/roles")["roles"]
        self.assertEqual([(r["username"], r["role"]) for r in roles], [("bob", "general-modeller")])
        self.shot("pod")
        # A second role, then removed again.
        self.browser.find_element(By.ID, "grant-user").send_keys("alice")
        Select(self.browser.find_element(By.ID, "grant-role")).select_by_value("super-modeller")
        self.click(By.ID, "grant")
        self.assertIn("super-modeller", self.text("#role-alice"))
        self.click(By.CSS_SELECTOR, "#role-alice button")
        self.assertFalse(self.browser.find_elements(By.ID, "role-alice"))
        roles = self.api("olivia", "/api/v1/pods/pod-a/roles")["roles"]
        self.assertEqual([(r["username"], r["role"]) for r in roles], [("bob", "general-modeller")])
        # A user that does not exist: the API's message, on the page.
        self.browser.find_element(By.ID, "grant-user").send_keys("nobody")
        self.click(By.ID, "grant")
        self.assertEqual(self.text("#error"), "no user 'nobody'")
        self.go("/pods")
        self.assertIn("bob: general-modeller", self.text("#my-pods"))
        self.shot("pods")

    def test_3_modeller_requests_access_and_confirms_the_exact_version(self):
        self.sign_in("bob")
        self.go("/models")
        self.click(By.CSS_SELECTOR, "#other-models a")
        self.click(By.ID, "request-access")
        Select(self.browser.find_element(By.ID, "pod")).select_by_value("pod-a")
        Select(self.browser.find_element(By.ID, "version")).select_by_value("1")
        self.browser.find_element(By.ID, "purpose").send_keys(XSS_PURPOSE)
        self.shot("request-form")
        self.click(By.ID, "review")
        # The confirmation names the exact version and its hash; nothing is sent yet.
        self.assertEqual(self.text("#confirm-model"), "alice/digits-net version 1")
        self.assertEqual(self.text("#confirm-sha256"), self.pushed[1]["sha256"])
        self.assertEqual(self.text("#confirm-purpose"), XSS_PURPOSE)
        self.assert_no_script_ran()
        self.assertEqual(self.api("bob", "/api/v1/access-requests")["requests"], [])
        self.shot("request-confirm")
        self.click(By.ID, "confirm-request")
        self.assertEqual(self.text("#request-status"), "pending")
        self.assertEqual(self.text("#request-model"), "alice/digits-net version 1")
        requests = self.api("bob", "/api/v1/access-requests")["requests"]
        self.assertEqual(len(requests), 1)
        self.assertEqual((requests[0]["version"], requests[0]["sha256"], requests[0]["purpose"]),
                         (1, self.pushed[1]["sha256"], XSS_PURPOSE))
        type(self).first_request = requests[0]["id"]
        self.go("/requests")
        self.assertIn("pending", self.text("#request-%d" % self.first_request))
        self.assert_no_script_ran()

    def test_4_owner_reviews_the_source_and_approves_then_the_job_runs(self):
        self.sign_in("olivia")
        self.assertEqual(self.text("#nav-inbox .badge"), "1")
        self.go("/inbox")
        row = self.text("#pending #request-%d" % self.first_request)
        self.assertIn("bob", row)
        self.assertIn("alice/digits-net:1", row)
        self.assertIn(XSS_PURPOSE, row)
        self.assert_no_script_ran()
        self.shot("inbox")
        self.click(By.CSS_SELECTOR, "#request-%d a.button" % self.first_request)
        # The exact source of version 1, as pushed, shown as text.
        self.assertEqual(self.source_lines(), {"digits_net.py": self.source_v1})
        self.assertEqual(self.text("#request-sha256"), self.pushed[1]["sha256"])
        self.assertIn('<script>window.__xss = "source"</script>', self.browser.page_source.replace("&lt;", "<")
                      .replace("&gt;", ">").replace("&quot;", '"'))
        self.assertNotIn('<script>window.__xss', self.browser.page_source)
        self.assert_no_script_ran()
        self.assertFalse(self.browser.find_elements(By.ID, "previous-note"))  # nothing approved before
        self.shot("review")
        expiry = (datetime.date.today() + datetime.timedelta(days=30)).isoformat()
        field = self.browser.find_element(By.ID, "expires")
        self.browser.execute_script("arguments[0].value = arguments[1]", field, expiry)
        self.browser.find_element(By.ID, "approve-reason").send_keys("reviewed digits_net.py")
        self.click(By.ID, "approve")
        self.assertEqual(self.text("#request-status"), "approved")
        self.assertEqual(self.text("#request-expires"), expiry + "T00:00:00Z")
        self.go("/inbox")
        self.assertTrue(self.browser.find_elements(By.ID, "no-pending"))
        self.assertIn("approved", self.text("#decided #request-%d" % self.first_request))

        # The pod, whose policy comes from the hub, now runs bob's job with version 1.
        signing_key = self.run_ok(["hub", "signing-key", "--data-dir", self.path("hub")]).strip()
        pod_yaml = self.path("pod-a.yaml")
        with open(pod_yaml, "w") as f:
            f.write("name: pod-a\nlisten: tcp://127.0.0.1:%d\n" % self.pod_port)
            f.write("dataset: {path: %s}\n" % os.path.join(SOURCE_DIR, "examples", "digits", "pod-a.csv"))
            f.write("key_file: %s\nthreads: 1\n" % self.path("keys", "pod-a.key"))
            f.write("policy: {hub: %s, hub_ca: %s, token_file: %s, signing_key: \"%s\", cache: %s}\n"
                    % (self.url, self.ca, self.path("keys", "pod-a.token"), signing_key, self.path("pod-a.policy")))
            f.write("audit_log: %s\n" % self.path("pod-a.audit.log"))
        endpoint = self.path("pod-a.endpoint")
        worker = self.start(["worker", "--config", pod_yaml, "--endpoint-file", endpoint], "pod-a.log")
        deadline = time.time() + 120
        while not os.path.exists(endpoint):
            self.assertIsNone(worker.poll(), read(self.path("pod-a.log")))
            self.assertLess(time.time(), deadline, read(self.path("pod-a.log")))
            time.sleep(0.1)
        job = self.path("job.yaml")
        with open(job, "w") as f:
            f.write("job_id: bob-digits\nhub: %s\nhub_ca: %s\nhub_token: %s\nkey_file: %s\n"
                    % (self.url, self.ca, self.tokens["bob"], self.path("keys", "bob.key")))
            f.write("model: {username: alice, model_ref: digits-net, model_version: 1}\n")
            f.write("datastructure: {target: label, input_shape: [1, 8, 8], num_classes: 10, scale: 0.0625}\n")
            f.write("pods: [pod-a]\nrounds: 2\nmin_pods: 1\nround_timeout: 120s\noutput_dir: %s\n"
                    % self.path("job-out"))
        run = subprocess.run([FEDPOD, "coordinator", "run", job], env=self.env, capture_output=True, text=True,
                             timeout=400)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr + read(self.path("pod-a.log")))
        history = json.loads(read(self.path("job-out", "history.json")))
        self.assertEqual(history["status"], "completed")
        self.assertEqual(history["model"]["resolved"]["version"], 1)
        self.assertEqual(history["model"]["resolved"]["sha256"], self.pushed[1]["sha256"])
        self.assertEqual(len(history["rounds"]), 2)
        worker.terminate()
        worker.wait(30)

    def test_5_owner_sees_the_diff_and_rejects_with_a_reason_the_modeller_reads(self):
        self.sign_in("bob")
        self.go("/models/alice/digits-net/request?version=2")
        Select(self.browser.find_element(By.ID, "pod")).select_by_value("pod-a")
        self.assertEqual(Select(self.browser.find_element(By.ID, "version")).first_selected_option
                         .get_attribute("value"), "2")
        self.browser.find_element(By.ID, "purpose").send_keys("same study, version 2")
        self.click(By.ID, "review")
        self.assertEqual(self.text("#confirm-model"), "alice/digits-net version 2")
        self.assertEqual(self.text("#confirm-sha256"), self.pushed[2]["sha256"])
        self.click(By.ID, "confirm-request")
        second = int(self.browser.current_url.rsplit("/", 1)[1])
        type(self).second_request = second

        self.sign_in("olivia")
        self.go("/requests/%d" % second)
        self.assertIn("Changes since version 1", self.text("#previous-note"))
        added = [r.text for r in self.browser.find_elements(By.CSS_SELECTOR, "#diff tr.add")]
        self.assertEqual(len(added), 1)
        self.assertIn("also reads /etc/passwd", added[0])
        self.shot("review-diff")
        reason = "v2 reads /etc/passwd; <i>remove</i> that and ask again"
        self.browser.find_element(By.ID, "reject").click()  # no reason: the browser's required check
        self.assertEqual(self.api("olivia", "/api/v1/access-requests/%d" % second)["status"], "pending")
        self.browser.find_element(By.ID, "reject-reason").send_keys(reason)
        self.click(By.ID, "reject")
        self.assertEqual(self.text("#request-status"), "rejected")

        self.sign_in("bob")
        self.go("/requests")
        row = self.text("#request-%d" % second)
        self.assertIn("rejected", row)
        self.assertIn(reason, row)  # as text: the <i> is not markup
        self.assertIn("approved", self.text("#request-%d" % self.first_request))
        self.shot("my-requests")
        self.go("/requests/%d" % second)
        self.assertEqual(self.text("#request-reason"), reason)

    def test_6_csrf_tokens_are_required_and_bound_to_the_session(self):
        olivia, olivia_csrf = self.session("olivia")
        bob, bob_csrf = self.session("bob")
        # A third request, pending, for olivia to (not) decide by forged forms.
        self.raw("POST", "/models/alice/digits-net/request", cookie=bob,
                 form={"csrf": bob_csrf, "step": "confirm", "pod": "pod-a", "version": "2",
                       "sha256": self.pushed[2]["sha256"], "purpose": "third"})
        pending = [r for r in self.api("olivia", "/api/v1/access-requests")["requests"] if r["status"] == "pending"]
        self.assertEqual(len(pending), 1)
        target = "/requests/%d/approve" % pending[0]["id"]
        for form, what in (({}, "no token"), ({"csrf": bob_csrf}, "bob's token"),
                           ({"csrf": "0" * 64}, "a made-up token")):
            status, _, body = self.raw("POST", target, cookie=olivia, form=form)
            self.assertEqual(status, 403, what)
            self.assertIn("CSRF token", body, what)
        self.assertEqual(self.api("olivia", "/api/v1/access-requests/%d" % pending[0]["id"])["status"], "pending")
        # The same form with her own token goes through.
        status, _, _ = self.raw("POST", target, cookie=olivia, form={"csrf": olivia_csrf})
        self.assertEqual(status, 303)
        self.assertEqual(self.api("olivia", "/api/v1/access-requests/%d" % pending[0]["id"])["status"], "approved")
        # Sign-in itself: the double-submit token must match the browser's cookie.
        status, _, body = self.raw("POST", "/signin", cookie="fedpod_signin=" + "1" * 64,
                                   form={"csrf": "2" * 64, "token": self.tokens["bob"]})
        self.assertEqual(status, 403)
        # Sign-out needs the token too, and ends the session for good.
        status, _, _ = self.raw("POST", "/signout", cookie=bob, form={})
        self.assertEqual(status, 403)
        status, _, _ = self.raw("POST", "/signout", cookie=bob, form={"csrf": bob_csrf})
        self.assertEqual(status, 303)
        status, headers, _ = self.raw("GET", "/models", cookie=bob)
        self.assertEqual((status, dict(headers)["Location"]), (303, "/signin?next=/models"))

    def test_7_a_modeller_cannot_use_the_owners_pages_by_crafting_urls(self):
        bob, csrf = self.session("bob")
        # bob's inbox holds only requests for pods he owns: none.
        status, _, body = self.raw("GET", "/inbox", cookie=bob)
        self.assertEqual(status, 200)
        self.assertIn('id="no-pending"', body)
        self.assertNotIn("request-%d" % self.second_request, body)
        # His own request's page offers no decision.
        status, _, body = self.raw("GET", "/requests/%d" % self.first_request, cookie=bob)
        self.assertEqual(status, 200)
        self.assertNotIn("revoke-form", body)
        self.assertNotIn("approve-form", body)
        # Deciding by crafting the form: refused by the API's own check, nothing changes.
        before = self.api("olivia", "/api/v1/access-requests")["requests"]
        for action in ("approve", "reject", "revoke"):
            for rid in (self.first_request, self.second_request):
                status, _, body = self.raw("POST", "/requests/%d/%s" % (rid, action), cookie=bob,
                                           form={"csrf": csrf, "reason": "forged"})
                self.assertEqual(status, 403, (action, rid, body))
                self.assertIn("only the owner of pod &apos;pod-a&apos; (olivia) may " + action, body)
        self.assertEqual(self.api("olivia", "/api/v1/access-requests")["requests"], before)
        # A confirmation whose sha256 is not the version's is refused, and nothing is asked.
        count = len(self.api("bob", "/api/v1/access-requests")["requests"])
        status, _, body = self.raw("POST", "/models/alice/digits-net/request", cookie=bob,
                                   form={"csrf": csrf, "step": "confirm", "pod": "pod-a", "version": "1",
                                         "sha256": self.pushed[2]["sha256"], "purpose": "swapped"})
        self.assertEqual(status, 409)
        self.assertIn("is not the one you confirmed", body)
        self.assertEqual(len(self.api("bob", "/api/v1/access-requests")["requests"]), count)
        # The pod's roles page and granting himself a role.
        status, _, body = self.raw("GET", "/pods/pod-a", cookie=bob)
        self.assertEqual(status, 403)
        self.assertIn("only the owner of pod &apos;pod-a&apos; (olivia) may list roles on it", body)
        status, _, body = self.raw("POST", "/pods/pod-a/roles", cookie=bob,
                                   form={"csrf": csrf, "username": "bob", "role": "super-modeller"})
        self.assertEqual(status, 403)
        status, _, body = self.raw("POST", "/pods/pod-a/roles/bob/remove", cookie=bob, form={"csrf": csrf})
        self.assertEqual(status, 403)
        # A form field that would address another API route is refused as a name.
        status, _, body = self.raw("POST", "/pods/pod-a/roles", cookie=bob,
                                   form={"csrf": csrf, "username": "bob/../../pods/pod-a", "role": "super-modeller"})
        self.assertEqual(status, 400)
        self.assertIn("is not a name", body)
        roles = self.api("olivia", "/api/v1/pods/pod-a/roles")["roles"]
        self.assertEqual([(r["username"], r["role"]) for r in roles], [("bob", "general-modeller")])
        # Someone else's request is as missing as one that does not exist.
        alice, _ = self.session("alice")
        status, _, body = self.raw("GET", "/requests/%d" % self.first_request, cookie=alice)
        self.assertEqual(status, 404)
        # No session: pages send the browser to sign in; forms are refused.
        status, headers, _ = self.raw("GET", "/inbox")
        self.assertEqual((status, dict(headers)["Location"]), (303, "/signin?next=/inbox"))
        status, _, _ = self.raw("POST", "/requests/%d/revoke" % self.first_request, form={"csrf": csrf})
        self.assertEqual(status, 401)
        # A private model of alice's stays invisible to bob's pages.
        self.as_user("alice", ["model", "push", "alice/secret-net", "--format", "torchscript", "--artifact",
                               self.path("digits_net_v1.pt")])
        status, _, body = self.raw("GET", "/models/alice/secret-net", cookie=bob)
        self.assertEqual(status, 404)
        status, _, body = self.raw("GET", "/models", cookie=bob)
        self.assertNotIn("secret-net", body)

    def test_8_session_cookie_attributes_and_page_headers(self):
        status, headers, body = self.raw("GET", "/signin")
        csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', body).group(1)
        signin = dict(headers)["Set-Cookie"].split(";")[0]
        status, headers, _ = self.raw("POST", "/signin", cookie=signin,
                                      form={"csrf": csrf, "token": self.tokens["alice"]})
        self.assertEqual(status, 303)
        cookie = [v for k, v in headers if k == "Set-Cookie" and v.startswith("fedpod_session=")][0]
        attrs = [a.strip() for a in cookie.split(";")]
        self.assertRegex(attrs[0], r"^fedpod_session=[0-9a-f]{64}$")
        for a in ("HttpOnly", "SameSite=Strict", "Secure", "Path=/", "Max-Age=28800"):
            self.assertIn(a, attrs)
        # A wrong or pod token signs nobody in, and says which.
        status, _, body = self.raw("POST", "/signin", cookie=signin, form={"csrf": csrf, "token": "f" * 64})
        self.assertEqual(status, 401)
        self.assertIn("not a user token of this hub", body)
        status, _, body = self.raw("POST", "/signin", cookie=signin,
                                   form={"csrf": csrf, "token": read(self.path("keys", "pod-a.token")).strip()})
        self.assertEqual(status, 401)
        self.assertIn("a pod&apos;s token", body)
        # An off-site "next" is not followed.
        status, headers, _ = self.raw("POST", "/signin", cookie=signin,
                                      form={"csrf": csrf, "token": self.tokens["alice"], "next": "//evil.example/"})
        self.assertEqual(dict(headers)["Location"], "/models")
        status, headers, _ = self.raw("GET", "/models", cookie=cookie.split(";")[0])
        h = dict(headers)
        self.assertEqual(status, 200)
        self.assertIn("script-src", h["Content-Security-Policy"].replace("default-src 'none'", "script-src"))
        self.assertEqual(h["X-Frame-Options"], "DENY")
        self.assertEqual(h["Cache-Control"], "no-store")
        # An unknown page is an HTML 404 for a browser, JSON for the API.
        status, headers, body = self.raw("GET", "/no/such/page")
        self.assertEqual(status, 404)
        self.assertIn("There is no page at this address.", body)
        status, _, body = self.raw("GET", "/api/v1/nope")
        self.assertEqual((status, json.loads(body)["error"]["code"]), (404, "not_found"))
        # The API is unchanged beside the pages: JSON, bearer tokens, no cookies honoured.
        status, _, body = self.raw("GET", "/api/v1/access-requests", cookie=cookie.split(";")[0])
        self.assertEqual(status, 401)


if __name__ == "__main__":
    unittest.main(verbosity=2)
