//! Plain HTML pages (zh-TW with English), everything escaped.

use std::fmt::Write;

use crate::store::{DatasetView, Phase, TxView};

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page. `refresh` adds `<meta http-equiv="refresh" content="2">`.
pub fn page(title: &str, body: &str, refresh: bool) -> String {
    let meta = if refresh {
        "<meta http-equiv=\"refresh\" content=\"2\">\n"
    } else {
        ""
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"zh-Hant-TW\">\n<head>\n<meta charset=\"utf-8\">\n{meta}\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{t}</title>\n<style>body{{font-family:sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}}\
         pre{{background:#f4f4f4;padding:.5rem;overflow:auto}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.25rem .5rem}}.bad{{color:#a00}}.ok{{color:#060}}</style>\n\
         </head>\n<body>\n<h1>{t}</h1>\n{body}\n<p><a href=\"/\">回首頁 / Home</a></p>\n</body>\n</html>\n",
        t = escape(title)
    )
}

/// One selectable dataset on the form.
pub struct Choice<'a> {
    /// Its id.
    pub resource_id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its provider.
    pub provider: &'a str,
    /// Checked by default.
    pub checked: bool,
}

/// The start form.
pub fn index(
    client_id: &str,
    service_name: &str,
    choices: &[Choice<'_>],
    error: Option<&str>,
) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<p>{} — 服務代碼 / client_id <code>{}</code></p>",
        escape(service_name),
        escape(client_id)
    );
    if let Some(e) = error {
        let _ = writeln!(b, "<p class=\"bad\">{}</p>", escape(e));
    }
    b.push_str(
        "<form method=\"post\" action=\"/start\">\n\
         <p><label>身分證統一編號 / Citizen ID (pid)<br>\
         <input name=\"pid\" required maxlength=\"10\" autocomplete=\"off\"></label></p>\n\
         <fieldset><legend>資料集 / Datasets</legend>\n",
    );
    for c in choices {
        let _ = writeln!(
            b,
            "<label><input type=\"checkbox\" name=\"resource\" value=\"{}\"{}> {} <small>({}, {})</small></label><br>",
            escape(c.resource_id),
            if c.checked { " checked" } else { "" },
            escape(c.name),
            escape(c.provider),
            escape(c.resource_id),
        );
    }
    b.push_str(
        "<p><label>其他資料集 / Other resource_ids (以逗號分隔 / comma-separated)<br>\
         <input name=\"resources\" size=\"40\"></label></p>\n</fieldset>\n\
         <p><label>案件編號 / caseNumber (試營運 / trial only)<br>\
         <input name=\"caseNumber\" maxlength=\"64\"></label></p>\n\
         <p><button type=\"submit\">前往 MyData 平臺 / Go to MyData</button></p>\n</form>\n",
    );
    page("MyData 線上服務範例 / Example SP", &b, false)
}

/// A plain message page.
pub fn message(title: &str, text: &str) -> String {
    page(
        title,
        &format!("<p class=\"bad\">{}</p>", escape(text)),
        false,
    )
}

fn dataset(b: &mut String, d: &DatasetView) {
    let status = if d.verified {
        "<span class=\"ok\">已驗證 / verified</span>".to_string()
    } else if d.shipped {
        format!(
            "<span class=\"bad\">驗證失敗 / verification failed: {}</span>",
            escape(d.error.as_deref().unwrap_or(""))
        )
    } else {
        "未附檔案 / no file".to_string()
    };
    let _ = writeln!(
        b,
        "<h3>{} <small>({})</small></h3>\n<p>代碼 / code {} — {}</p>",
        escape(&d.resource_name),
        escape(&d.resource_id),
        d.code,
        status
    );
    if d.files.is_empty() {
        return;
    }
    b.push_str("<table><tr><th>檔名 / file</th><th>大小 / bytes</th><th>SHA-256</th></tr>\n");
    for f in &d.files {
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            escape(&f.name),
            f.size,
            escape(&f.digest)
        );
    }
    b.push_str("</table>\n");
    for f in d.files.iter().filter(|f| f.text.is_some()) {
        let _ = writeln!(
            b,
            "<p>{}</p><pre>{}</pre>",
            escape(&f.name),
            escape(f.text.as_deref().unwrap_or(""))
        );
    }
}

/// The page of one transaction after the return; refreshes itself while waiting.
pub fn transaction(v: &TxView, outcome_zh: &str, outcome_en: &str) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<p>交易 / tx_id <code>{}</code></p>\n<p>平臺回覆 / return code {}: {} / {}</p>",
        escape(&v.tx_id),
        v.code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
        escape(outcome_zh),
        escape(outcome_en)
    );
    if let Some(u) = &v.unable_to_deliver {
        let _ = writeln!(
            b,
            "<p class=\"bad\">無法提供的資料集 / unable to deliver: {}</p>",
            escape(&u.join(", "))
        );
    }
    let refresh = v.phase == Phase::Waiting;
    match v.phase {
        Phase::Waiting => b.push_str(
            "<p>資料準備中，頁面每 2 秒自動更新。/ Waiting for the data; this page refreshes every 2 seconds.</p>\n",
        ),
        Phase::Delivered => {
            let _ = writeln!(
                b,
                "<h2>收到的資料 / Data received</h2>\n<p>{}</p>",
                if v.verified {
                    "<span class=\"ok\">所有資料包皆驗證成功 / every package verified</span>"
                } else {
                    "<span class=\"bad\">部分資料包驗證失敗 / some packages failed verification</span>"
                }
            );
            for d in &v.datasets {
                dataset(&mut b, d);
            }
        }
        Phase::Failed => {
            let _ = writeln!(
                b,
                "<p class=\"bad\">取得資料失敗 / could not get the data: {}</p>",
                escape(v.error.as_deref().unwrap_or(""))
            );
        }
        Phase::Started | Phase::Ended => {}
    }
    page("MyData 交易結果 / Transaction", &b, refresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let p = message("<t>", "<script>alert(1)</script>");
        assert!(!p.contains("<script>"));
        assert!(p.contains("&lt;script&gt;"));
        assert!(p.contains("<title>&lt;t&gt;</title>"));
        assert!(!page("x", "", false).contains("refresh"));
        assert!(page("x", "", true).contains("http-equiv=\"refresh\" content=\"2\""));
    }

    fn view(phase: Phase) -> TxView {
        TxView {
            tx_id: "t<1>".into(),
            code: Some(200),
            phase,
            sp_api_received: true,
            unable_to_deliver: None,
            datasets: vec![DatasetView {
                resource_id: "API.2RXHOGTXIC".into(),
                resource_name: "低收".into(),
                code: 200,
                shipped: true,
                verified: true,
                error: None,
                files: vec![crate::store::FileView {
                    name: "a.json".into(),
                    size: 7,
                    digest: "ab".into(),
                    text: Some("{\"x\":\"<b>\"}".into()),
                }],
            }],
            verified: true,
            error: None,
        }
    }

    #[test]
    fn waiting_page_refreshes_and_result_page_does_not() {
        let w = transaction(&view(Phase::Waiting), "已同意", "success");
        assert!(w.contains("http-equiv=\"refresh\""));
        assert!(w.contains("t&lt;1&gt;"));
        assert!(!w.contains("a.json"));
        let d = transaction(&view(Phase::Delivered), "已同意", "success");
        assert!(!d.contains("http-equiv=\"refresh\""));
        assert!(d.contains("<td>a.json</td><td>7</td>"));
        assert!(d.contains("&quot;&lt;b&gt;&quot;"));
        assert!(!d.contains("<b>"));
    }
}
