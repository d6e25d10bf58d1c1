import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../testing/until.js';

/**
 * The Alertmanager configuration (infra/prometheus/alertmanager.yml with its email templates):
 * valid for Alertmanager, every severity the rules use goes to the staff receiver, and a real
 * Alertmanager mails an alert to staff with its name, summary and description.
 * Needs `amtool` (and the `prometheus-alertmanager` server from the same package):
 * scripts/amtool/ensure.sh installs the Debian package prometheus-alertmanager when it is
 * missing (as root; otherwise these tests fail and say what to install).
 */
const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '../..');
const config = path.join(root, 'infra/prometheus/alertmanager.yml');
const templates = path.join(root, 'infra/prometheus/alertmanager-email.tmpl');
const INSTALL_HINT = 'install the Debian package prometheus-alertmanager (apt-get install --no-install-recommends prometheus-alertmanager)';

async function amtool(...args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await run('amtool', args, { cwd: root });
    return stdout + stderr;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
    if (e.code === 'ENOENT') throw new Error(`amtool not found: ${INSTALL_HINT}`, { cause: err });
    throw new Error(`amtool ${args.join(' ')} failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`, { cause: err });
  }
}

/** Installs amtool when it is missing; a failed install is reported by the tests that need it. */
function ensureAmtool(): void {
  try {
    execFileSync('bash', [path.join(root, 'scripts/amtool/ensure.sh')], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    console.error(`scripts/amtool/ensure.sh could not install amtool: ${stderr || (err as Error).message}`);
  }
}

/** Alert names and severities of the Prometheus rules (alerts.yml). */
async function ruleSeverities(): Promise<{ alert: string; severity: string | undefined }[]> {
  const text = await readFile(path.join(root, 'infra/prometheus/alerts.yml'), 'utf8');
  return text.split(/^\s*- alert: /m).slice(1).map((block) => ({
    alert: block.split(/\s/, 1)[0]!,
    severity: /severity:\s*"?(\w+)/.exec(block)?.[1],
  }));
}

interface Mail { from: string; to: string[]; auth: string | undefined; data: string }

/** A minimal SMTP server (EHLO, AUTH PLAIN, MAIL, RCPT, DATA): keeps what it is sent. */
async function smtpServer(): Promise<{ port: number; mails: Mail[]; close: () => Promise<void> }> {
  const mails: Mail[] = [];
  const server = net.createServer((sock) => {
    let buf = '';
    let inData = false;
    let awaitingAuth = false;
    let mail: Mail = { from: '', to: [], auth: undefined, data: '' };
    const reply = (line: string) => sock.write(`${line}\r\n`);
    sock.on('data', (chunk) => {
      buf += chunk.toString('latin1');
      for (;;) {
        if (inData) {
          const end = buf.indexOf('\r\n.\r\n');
          if (end < 0) return;
          mail.data = buf.slice(0, end).replace(/^\.\./gm, '.');
          buf = buf.slice(end + 5);
          inData = false;
          mails.push(mail);
          mail = { from: '', to: [], auth: mail.auth, data: '' };
          reply('250 OK queued');
          continue;
        }
        const nl = buf.indexOf('\r\n');
        if (nl < 0) return;
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        const cmd = line.split(' ', 1)[0]!.toUpperCase();
        if (awaitingAuth) {
          awaitingAuth = false;
          mail.auth = Buffer.from(line, 'base64').toString('utf8');
          reply('235 2.7.0 Authentication successful');
        } else if (cmd === 'EHLO' || cmd === 'HELO') {
          reply('250-localhost');
          reply('250-AUTH PLAIN');
          reply('250 8BITMIME');
        } else if (cmd === 'AUTH') {
          const initial = line.split(' ')[2];
          if (initial === undefined) {
            awaitingAuth = true;
            reply('334 ');
          } else {
            mail.auth = Buffer.from(initial, 'base64').toString('utf8');
            reply('235 2.7.0 Authentication successful');
          }
        } else if (cmd === 'MAIL') {
          mail.from = line.slice(10);
          reply('250 OK');
        } else if (cmd === 'RCPT') {
          mail.to.push(line.slice(8));
          reply('250 OK');
        } else if (cmd === 'DATA') {
          inData = true;
          reply('354 End data with <CR><LF>.<CR><LF>');
        } else if (cmd === 'QUIT') {
          reply('221 Bye');
          sock.end();
        } else {
          reply('250 OK');
        }
      }
    });
    sock.on('error', () => undefined);
    reply('220 localhost ESMTP test');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return { port, mails, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

/** The Subject and To headers and the decoded plain-text part of a mail Alertmanager sent. */
function parseMail(data: string): { subject: string; to: string; text: string } {
  const header = (name: string) => {
    const m = new RegExp(`^${name}: (.*(?:\\r\\n[ \\t].*)*)`, 'mi').exec(data);
    return (m?.[1] ?? '').replace(/\r\n[ \t]/g, ' '); // ASCII here: no encoded words
  };
  // the multipart body's text/plain part: its headers (in any order), a blank line, its body
  const part = data.split(/\r\n--\S+\r\n/).find((p) => /^Content-Type: text\/plain/im.test(p.split('\r\n\r\n', 1)[0]!)) ?? '';
  const [partHeaders = '', ...rest] = part.split('\r\n\r\n');
  const body = rest.join('\r\n\r\n').replace(/\r\n--\S+--[\s\S]*$/, '');
  const text = /quoted-printable/i.test(partHeaders)
    ? Buffer.from(body.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/gi, (_x, h: string) => String.fromCharCode(parseInt(h, 16))), 'latin1').toString('utf8')
    : body;
  return { subject: header('Subject'), to: header('To'), text };
}

describe('Alertmanager configuration', () => {
  beforeAll(ensureAmtool, 120_000);

  it('is valid for Alertmanager (amtool check-config), with its email templates', async () => {
    const out = await amtool('check-config', config);
    expect(out).toContain('SUCCESS');
    expect(out).toContain(' - 1 receivers');
    expect(out).toContain(' - 1 templates');
    expect(out).toContain(' - 1 inhibit rules');
  });

  it('sends an alert of every severity the rules use, and one without, to staff', async () => {
    const rules = await ruleSeverities();
    expect(rules.length).toBeGreaterThan(10);
    expect(rules.filter((r) => r.severity === undefined)).toEqual([]);
    const severities = new Set(rules.map((r) => r.severity!));
    expect([...severities].sort()).toEqual(['critical', 'warning']);
    for (const r of rules) {
      const out = await amtool('config', 'routes', 'test', `--config.file=${config}`, '--tree', '--verify.receivers=staff', `alertname=${r.alert}`, `severity=${r.severity!}`, 'queue=email');
      // its own severity's route (its timing), not only the default one
      expect(out, r.alert).toContain(`{severity="${r.severity!}"}  receiver: staff`);
    }
    expect(await amtool('config', 'routes', 'test', `--config.file=${config}`, '--verify.receivers=staff', 'alertname=Other')).toMatch(/^staff$/m);
  });

  it('renders its email templates (amtool template render)', async () => {
    const out = await amtool('template', 'render', `--template.glob=${templates}`, '--template.text={{ template "fleet.email.subject" . }}|{{ template "fleet.email.text" . }}');
    expect(out).toMatch(/^\[Curavani Fleet\] /m);
    expect(out).toContain('Alertmanager (silence an alert while you work on it)');
  });

  describe('a running Alertmanager', () => {
    let dir = '';
    let child: ChildProcess | undefined;
    let smtp: Awaited<ReturnType<typeof smtpServer>> | undefined;
    let url = '';
    let log = '';

    beforeAll(async () => {
      const bin = ['prometheus-alertmanager', 'alertmanager'].find((b) => {
        try {
          execFileSync('sh', ['-c', `command -v ${b}`], { stdio: 'ignore' });
          return true;
        } catch {
          return false;
        }
      });
      if (bin === undefined) throw new Error(`the Alertmanager server is not installed: ${INSTALL_HINT}`);
      dir = await mkdtemp(path.join(os.tmpdir(), 'fleet-alertmanager-'));
      smtp = await smtpServer();
      // Without a trailing newline: Alertmanager (0.25) sends the file's bytes as they are.
      await writeFile(path.join(dir, 'smtp-password'), 'secret-from-file');
      // The real file with the deployment's placeholders pointed at this test: the local SMTP
      // server (no TLS), the password file here, and no waiting before the first email.
      let text = await readFile(config, 'utf8');
      const replace = (from: RegExp, to: string) => {
        expect(text, String(from)).toMatch(from);
        text = text.replace(from, to);
      };
      replace(/smtp_smarthost: '[^']+'/, `smtp_smarthost: '127.0.0.1:${smtp.port}'`);
      replace(/smtp_require_tls: true/, 'smtp_require_tls: false');
      replace(/\/etc\/alertmanager\/secrets\/smtp-password/, path.join(dir, 'smtp-password'));
      replace(/group_wait: \S+/g, 'group_wait: 1s');
      await writeFile(path.join(dir, 'alertmanager.yml'), text);
      await copyFile(templates, path.join(dir, 'alertmanager-email.tmpl'));
      const port = await freePort();
      url = `http://127.0.0.1:${port}`;
      child = spawn(bin, [
        `--config.file=${path.join(dir, 'alertmanager.yml')}`,
        `--storage.path=${path.join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        `--web.external-url=${url}`,
        '--cluster.listen-address=',
      ], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
      await until(`Alertmanager ready (log: ${log})`, async () => {
        if (child!.exitCode !== null) throw new Error(`Alertmanager exited ${child!.exitCode}:\n${log}`);
        return fetch(`${url}/-/ready`).then((r) => r.ok, () => false);
      }, 30_000, 200);
    }, 60_000);

    afterAll(async () => {
      if (child && child.exitCode === null) {
        const exited = new Promise((resolve) => child!.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      await smtp?.close();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it('emails staff the alert with its name, queue, summary and description; a critical one mutes the warning of the same name and queue', async () => {
      const now = new Date().toISOString();
      const alert = (alertname: string, severity: string, summary: string, description: string) => ({
        labels: { alertname, severity, queue: 'email' },
        annotations: { summary, description },
        startsAt: now,
        generatorURL: 'http://prometheus.invalid/graph',
      });
      const res = await fetch(`${url}/api/v2/alerts`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify([
          alert('FleetJobsDyingFast', 'critical', 'More than 10 email jobs dead-lettered in 15 minutes', 'Fix it, then fleet dlq requeue --all --queue email --reason ...'),
          // the same name and queue as a warning (another route, so another group): muted
          alert('FleetJobsDyingFast', 'warning', 'the warning that must not be mailed', 'muted by the critical one'),
          // a warning of another name: mailed on its own
          alert('FleetEmailFailures', 'warning', '2 email(s) failed for good in the last hour', ''),
        ]),
      });
      expect(res.status).toBe(200);
      const mails = smtp!.mails;
      await until(`two emails (Alertmanager log: ${log})`, () => mails.length >= 2, 30_000, 100);
      // every group waits 1 s here (group_wait); a mail for the muted warning would be out by now
      await new Promise((r) => setTimeout(r, 3_000));
      expect(mails.map((m) => parseMail(m.data).subject).sort()).toEqual([
        '[Curavani Fleet] CRITICAL: FleetJobsDyingFast (email): More than 10 email jobs dead-lettered in 15 minutes',
        '[Curavani Fleet] WARNING: FleetEmailFailures (email): 2 email(s) failed for good in the last hour',
      ]);
      for (const sent of mails) {
        expect(sent.to).toEqual(['<info@curavani.com>']);
        expect(sent.from).toContain('noreply@curavani.com');
        // AUTH PLAIN: \0username\0password, the password read from smtp_auth_password_file
        expect(sent.auth).toBe('\0alerts@curavani.com\0secret-from-file');
        expect(parseMail(sent.data).to).toBe('info@curavani.com');
        expect(sent.data).not.toContain('must not be mailed');
      }
      const critical = parseMail(mails.find((m) => m.data.includes('FleetJobsDyingFast'))!.data);
      expect(critical.text).toContain('FIRING (1):');
      expect(critical.text).toContain('FleetJobsDyingFast (critical), queue email');
      expect(critical.text).toContain('More than 10 email jobs dead-lettered in 15 minutes');
      expect(critical.text).toContain('What to do: Fix it, then fleet dlq requeue --all --queue email --reason ...');
      expect(critical.text).toContain(`Alertmanager (silence an alert while you work on it): ${url}`);
      const warning = parseMail(mails.find((m) => m.data.includes('FleetEmailFailures'))!.data);
      expect(warning.text).toContain('FleetEmailFailures (warning), queue email');
      expect(warning.text).not.toContain('What to do'); // no description, no empty line for it
    });
  });
});
