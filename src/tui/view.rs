//! Drawing the [`Model`] with ratatui: a header, the tree (cells, agents, tasks), a detail
//! pane of bars for the selected cell or agent, the events pane, and a footer; the help
//! and confirmation dialogs on top. Pure: what is drawn depends only on the model, the
//! palette and `now`, which is what the stored-screen tests rely on.
//!
//! Only the rows on screen are formatted, so a tree of 10,000 agents costs a screenful.

use chrono::{DateTime, Utc};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::model::{self, CellSnap, Level, Mode, Model, Row};
use crate::clock;
use crate::model::CellStatus;
use crate::ops::budget::State;
use crate::ops::health::Health;
use crate::ops::reservation::RESOURCES;
use crate::ops::status::AgentView;
use crate::output::Tone;
use crate::store::events;
use crate::units;

/// How states are coloured: the same tones as `pas status`, or none at all.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    /// Colour at all (`--color`, `NO_COLOR`).
    pub color: bool,
    /// The tone of a health.
    pub health: fn(Health) -> Tone,
    /// The tone of a cell status.
    pub cell: fn(CellStatus) -> Tone,
}

impl Palette {
    /// No colour; emphasis by reverse video only.
    #[cfg(test)]
    pub fn plain() -> Palette {
        Palette {
            color: false,
            health: |_| Tone::Plain,
            cell: |_| Tone::Plain,
        }
    }

    fn tone(&self, tone: Tone) -> Style {
        if !self.color {
            return Style::default();
        }
        match tone {
            Tone::Plain => Style::default(),
            Tone::Good => Style::default().fg(Color::Green),
            Tone::Warn => Style::default().fg(Color::Yellow),
            Tone::Bad => Style::default().fg(Color::Red),
            Tone::Dim => Style::default().add_modifier(Modifier::DIM),
        }
    }

    fn bold(&self) -> Style {
        if self.color {
            Style::default().add_modifier(Modifier::BOLD)
        } else {
            Style::default()
        }
    }

    fn state(&self, state: Option<State>) -> Style {
        self.tone(match state.unwrap_or(State::Ok) {
            State::Ok => Tone::Good,
            State::Warning => Tone::Warn,
            State::Breach => Tone::Bad,
        })
    }
}

/// The tone of a bar filled to `r` of its limit: warn from `warn_at`, bad when full.
fn fill_tone(r: f64, warn_at: f64) -> Tone {
    if r >= 1.0 {
        Tone::Bad
    } else if r >= warn_at {
        Tone::Warn
    } else {
        Tone::Good
    }
}

/// A bar `width` cells wide filled to `ratio`, with `│` at each mark past the fill.
pub fn bar(ratio: f64, width: usize, marks: &[f64]) -> String {
    let cells = |r: f64| ((r.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    let filled = cells(ratio);
    let mut out: Vec<char> = (0..width)
        .map(|i| if i < filled { '█' } else { '░' })
        .collect();
    for m in marks {
        let at = cells(*m).min(width.saturating_sub(1));
        if at >= filled && at < width {
            out[at] = '│';
        }
    }
    format!("▕{}▏", out.into_iter().collect::<String>())
}

fn fit(text: &str, width: usize) -> String {
    let n = text.chars().count();
    if n <= width {
        format!("{text:<width$}")
    } else if width == 0 {
        String::new()
    } else {
        let cut: String = text.chars().take(width - 1).collect();
        format!("{cut}…")
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn percent(ratio: f64) -> String {
    format!("{:.0}%", ratio * 100.0)
}

/// A token count for people: `950`, `42k`, `1.2M`.
fn tokens(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{}k", n / 1000),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

fn ctx_ratio(a: &AgentView) -> Option<f64> {
    match (a.ctx_used, a.ctx_limit) {
        (Some(u), Some(l)) if l > 0 => Some(u as f64 / l as f64),
        _ => None,
    }
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, model: &mut Model, palette: &Palette, now: DateTime<Utc>) {
    let area = frame.area();
    let events_height = (area.height / 5).clamp(3, 12) + 1;
    let [header, tree, detail, events_area, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(6),
        Constraint::Length(events_height),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, header, model, palette, now);
    draw_tree(frame, tree, model, palette, now);
    draw_detail(frame, detail, model, palette, now);
    draw_events(frame, events_area, model, palette);
    draw_footer(frame, footer, model, palette);
    match model.mode.clone() {
        Mode::Help => draw_help(frame, area),
        Mode::Confirm(action) => draw_confirm(frame, area, &action),
        Mode::Normal | Mode::Filter => {}
    }
}

fn draw_header(
    frame: &mut Frame<'_>,
    area: Rect,
    model: &Model,
    palette: &Palette,
    now: DateTime<Utc>,
) {
    // The counts first and the root last: on a narrow terminal the path is cut, not the
    // number of dead agents.
    let mut spans = vec![Span::styled(" pas top ", palette.bold())];
    if let Some(s) = &model.snapshot {
        let mut counts = std::collections::BTreeMap::new();
        for c in &s.cells {
            for a in &c.view.agents {
                *counts.entry(a.health).or_insert(0usize) += 1;
            }
        }
        spans.push(Span::raw(format!(
            " {} cell(s), {} agent(s):",
            s.cells.len(),
            s.agent_count()
        )));
        for (h, n) in counts {
            spans.push(Span::raw(" "));
            spans.push(Span::styled(
                format!("{n} {}", h.as_str()),
                palette.tone((palette.health)(h)),
            ));
        }
        if !s.errors.is_empty() {
            spans.push(Span::styled(
                format!("  {} unreadable", s.errors.len()),
                palette.tone(Tone::Bad),
            ));
        }
        spans.push(Span::raw("  "));
    }
    let clock_text = format!(" {} ", now.format("%H:%M:%S"));
    // The root only when it fits whole.
    let used: usize = spans.iter().map(Span::width).sum();
    if used + model.root.chars().count() + clock_text.len() <= area.width as usize {
        spans.push(Span::raw(model.root.clone()));
    }
    let [left, right] = Layout::horizontal([
        Constraint::Min(1),
        Constraint::Length(clock_text.len() as u16),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(Line::from(spans)), left);
    frame.render_widget(Paragraph::new(clock_text), right);
}

/// Column widths of agent rows.
const ID_W: usize = 16;
const HEALTH_W: usize = 9;
const BEAT_W: usize = 7;
const CTX_BAR_W: usize = 10;

fn draw_tree(
    frame: &mut Frame<'_>,
    area: Rect,
    model: &mut Model,
    palette: &Palette,
    now: DateTime<Utc>,
) {
    let [head, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let title = format!(
        "  {:<w$} {:<HEALTH_W$} {:>BEAT_W$} {:>3} {:<ctx$} NEXT RESTART",
        "CELL / AGENT / TASK",
        "HEALTH",
        "BEAT",
        "RST",
        "CONTEXT",
        w = ID_W + 5,
        ctx = CTX_BAR_W + 7,
    );
    let head_style = if palette.color {
        Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
    } else {
        Style::default()
    };
    frame.render_widget(Paragraph::new(Span::styled(title, head_style)), head);
    let height = body.height as usize;
    model.scroll_into_view(height);
    let Some(snapshot) = &model.snapshot else {
        frame.render_widget(
            Paragraph::new(format!("  reading {} ...", model.root)),
            body,
        );
        return;
    };
    if model.rows.is_empty() {
        let text = if snapshot.cells.is_empty() {
            format!("  no cells under {}", model.root)
        } else {
            format!(
                "  nothing matches the filter {:?} (Esc clears it)",
                model.filter
            )
        };
        frame.render_widget(Paragraph::new(text), body);
        return;
    }
    let mut lines = Vec::with_capacity(height);
    for i in model.offset..(model.offset + height).min(model.rows.len()) {
        let row = model.rows[i];
        let mut line = match row {
            Row::Cell(c) => {
                let open = matches!(model.rows.get(i + 1), Some(Row::Agent(o, _)) if *o == c);
                cell_line(&snapshot.cells[c], open, palette, now)
            }
            Row::Agent(c, a) => {
                agent_line(model, i, c, &snapshot.cells[c].view.agents[a], palette, now)
            }
            Row::Task(c, a) => task_line(model, i, c, &snapshot.cells[c].view.agents[a]),
        };
        if i == model.selected {
            line = line.patch_style(Style::default().add_modifier(Modifier::REVERSED));
            // Reverse video over the full width, so the selection reads in any colour scheme.
            let used: usize = line.width();
            let pad = (body.width as usize).saturating_sub(used);
            line.push_span(Span::styled(
                " ".repeat(pad),
                Style::default().add_modifier(Modifier::REVERSED),
            ));
        }
        lines.push(line);
    }
    frame.render_widget(Paragraph::new(lines), body);
}

fn cell_line<'a>(cell: &CellSnap, open: bool, palette: &Palette, now: DateTime<Utc>) -> Line<'a> {
    let v = &cell.view;
    let arrow = if open || v.agents.is_empty() {
        "▾"
    } else {
        "▸"
    };
    let time = match (cell.time_used(now), v.timeout) {
        (Some(u), Some(t)) => format!("{}/{}", clock::human_duration(u), clock::human_duration(t)),
        (Some(u), None) => clock::human_duration(u),
        _ => "-".into(),
    };
    let t = &v.tasks;
    let mut spans = vec![
        Span::raw(format!("{arrow} ")),
        Span::styled(v.name.clone(), palette.bold()),
        Span::raw(format!(" {} ", short(&v.id))),
        Span::styled(
            format!("{:<9}", v.status.as_str()),
            palette.tone((palette.cell)(v.status)),
        ),
    ];
    // A closed cell says how its agents are, before the tasks, so a large fleet reads at
    // a glance with every cell collapsed.
    if !open && !v.agents.is_empty() {
        for h in Health::ALL {
            if let Some(n) = v.health_counts.get(h.as_str()) {
                spans.push(Span::raw(" "));
                spans.push(Span::styled(
                    format!("{n} {}", h.as_str()),
                    palette.tone((palette.health)(*h)),
                ));
            }
        }
        spans.push(Span::raw(" ·"));
    }
    spans.extend([
        Span::raw(format!(" {}/{} done  ", t.completed, t.total)),
        Span::styled(
            format!("{} blocked", t.blocked),
            palette.tone(if t.blocked > 0 {
                Tone::Warn
            } else {
                Tone::Plain
            }),
        ),
        Span::raw("  "),
        Span::styled(
            format!("{} failed", t.failed),
            palette.tone(if t.failed > 0 { Tone::Bad } else { Tone::Plain }),
        ),
        Span::raw(format!("  {time}")),
    ]);
    Line::from(spans)
}

/// Whether no later agent of the same cell follows row `i`.
fn last_agent(model: &Model, i: usize, cell: usize) -> bool {
    for r in &model.rows[i + 1..] {
        match r {
            Row::Task(..) => continue,
            Row::Agent(c, _) => return *c != cell,
            Row::Cell(_) => return true,
        }
    }
    true
}

fn agent_line<'a>(
    model: &Model,
    i: usize,
    cell: usize,
    a: &AgentView,
    palette: &Palette,
    now: DateTime<Utc>,
) -> Line<'a> {
    let branch = if last_agent(model, i, cell) {
        "└─"
    } else {
        "├─"
    };
    let health = palette.tone((palette.health)(a.health));
    let age = model
        .beat_age(cell, a, now)
        .map_or("never".to_string(), clock::human_duration);
    let ctx = match ctx_ratio(a) {
        Some(r) => Span::styled(
            format!(
                "{} {:>4}",
                bar(r, CTX_BAR_W, &[a.ctx_thresholds.0, a.ctx_thresholds.1]),
                percent(r)
            ),
            palette.state(a.ctx_state),
        ),
        None => Span::raw(format!("{:<w$}", "-", w = CTX_BAR_W + 7)),
    };
    let next = model::next_restart(a, now);
    Line::from(vec![
        Span::raw(format!("  {branch} ")),
        Span::styled("●", health),
        Span::raw(format!(" {} ", fit(&a.id, ID_W))),
        Span::styled(format!("{:<HEALTH_W$}", a.health.as_str()), health),
        Span::raw(format!(" {age:>BEAT_W$} {:>3} ", a.restart_count)),
        ctx,
        Span::styled(
            format!(" {next}"),
            palette.tone(if next == "-" { Tone::Dim } else { Tone::Warn }),
        ),
        Span::styled(usage_text(a), palette.tone(Tone::Dim)),
    ])
}

/// A running agent's RSS and CPU percent (over the last refresh), after its row: ` 52 MB
/// 3.1%`; nothing for an agent that does not run here.
fn usage_text(a: &AgentView) -> String {
    match &a.usage {
        Some(u) => format!(
            "  {} {}",
            crate::units::show(u.rss_bytes as f64, crate::units::Unit::Bytes),
            u.cpu_percent.map_or("-".into(), |p| format!("{p}% cpu"))
        ),
        None => String::new(),
    }
}

fn task_line<'a>(model: &Model, i: usize, cell: usize, a: &AgentView) -> Line<'a> {
    // The task row belongs to the agent row just above it.
    let stem = if last_agent(model, i.saturating_sub(1), cell) {
        " "
    } else {
        "│"
    };
    let progress = a
        .progress
        .map(|p| format!(" · progress {}", percent(p)))
        .unwrap_or_default();
    Line::from(format!(
        "  {stem}    └─ task {}{progress}",
        a.current_task.as_deref().unwrap_or("-")
    ))
}

fn quota_lines<'a>(
    cell: &CellSnap,
    held: &[f64; 4],
    width: usize,
    palette: &Palette,
    whose: &str,
) -> Vec<Line<'a>> {
    RESOURCES
        .iter()
        .enumerate()
        .take(3)
        .map(|(i, (_, unit, label))| {
            let reserved = units::show(held[i], *unit);
            match cell.capacity[i] {
                Some(cap) if cap > 0.0 => {
                    let r = held[i] / cap;
                    let tone = fill_tone(r, 0.8);
                    Line::from(vec![
                        Span::raw(format!("{label:<8} ")),
                        Span::styled(bar(r, width, &[]), palette.tone(tone)),
                        Span::raw(format!(
                            " {:>4}  {reserved} of {} reserved{whose}",
                            percent(r),
                            units::show(cap, *unit)
                        )),
                    ])
                }
                _ => Line::from(format!(
                    "{label:<8} {reserved} reserved{whose}; the cell sets no quota"
                )),
            }
        })
        .collect()
}

fn draw_detail(
    frame: &mut Frame<'_>,
    area: Rect,
    model: &Model,
    palette: &Palette,
    now: DateTime<Utc>,
) {
    let width = ((area.width as usize).saturating_sub(60)).clamp(10, 40);
    let (title, lines): (String, Vec<Line<'_>>) = if let Some((cell, a)) = model.selected_agent() {
        let mut lines = Vec::new();
        match ctx_ratio(a) {
            Some(r) => lines.push(Line::from(vec![
                Span::raw("context  "),
                Span::styled(
                    bar(r, width, &[a.ctx_thresholds.0, a.ctx_thresholds.1]),
                    palette.state(a.ctx_state),
                ),
                Span::raw(format!(
                    " {:>4}  {} of {} tokens, warn {} breach {}",
                    percent(r),
                    tokens(a.ctx_used.unwrap_or(0)),
                    tokens(a.ctx_limit.unwrap_or(0)),
                    percent(a.ctx_thresholds.0),
                    percent(a.ctx_thresholds.1)
                )),
            ])),
            None => lines.push(Line::from(
                "context  not reported (beat with --ctx-used and --ctx-limit)",
            )),
        }
        let held = cell
            .reserved_by_agent
            .get(&a.id)
            .copied()
            .unwrap_or([0.0; 4]);
        lines.extend(quota_lines(cell, &held, width, palette, " by it"));
        let age = cell.beat_age(a, now).map_or("never".into(), |s| {
            format!("{} ago", clock::human_duration(s))
        });
        lines.push(Line::from(format!(
            "state    {} · process {} · last beat {age} · {} beats · restarts {} · next {}",
            a.status.as_str(),
            a.process.as_str(),
            a.heartbeat_count,
            a.restart_count,
            model::next_restart(a, now)
        )));
        (
            format!(
                " agent {} · {} · cell {} ",
                a.id,
                a.role.as_str(),
                cell.view.name
            ),
            lines,
        )
    } else if let Some(cell) = model.selected_cell() {
        let v = &cell.view;
        let t = &v.tasks;
        let done = if t.total > 0 {
            t.completed as f64 / t.total as f64
        } else {
            0.0
        };
        let mut lines = vec![Line::from(vec![
            Span::raw("tasks    "),
            Span::styled(
                bar(done, width, &[]),
                palette.tone(if t.failed > 0 { Tone::Bad } else { Tone::Good }),
            ),
            Span::raw(format!(
                " {:>4}  {}/{} done · {} blocked · {} failed · {} in progress · {} pending",
                percent(done),
                t.completed,
                t.total,
                t.blocked,
                t.failed,
                t.in_progress,
                t.pending
            )),
        ])];
        lines.push(match (cell.time_used(now), v.timeout) {
            (Some(u), Some(limit)) => {
                let r = u / limit;
                let tone = fill_tone(r, 0.75);
                Line::from(vec![
                    Span::raw("time     "),
                    Span::styled(bar(r, width, &[0.75]), palette.tone(tone)),
                    Span::raw(format!(
                        " {:>4}  {} of {}",
                        percent(r),
                        clock::human_duration(u),
                        clock::human_duration(limit)
                    )),
                ])
            }
            (Some(u), None) => Line::from(format!(
                "time     {} used; no timeout",
                clock::human_duration(u)
            )),
            _ => Line::from("time     -"),
        });
        lines.extend(quota_lines(cell, &cell.reserved, width, palette, ""));
        (
            format!(
                " cell {} · {} · {} · {} agent(s) ",
                v.name,
                v.id,
                v.status,
                v.agents.len()
            ),
            lines,
        )
    } else {
        (" detail ".into(), Vec::new())
    };
    let block = Block::default().borders(Borders::TOP).title(title);
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn draw_events(frame: &mut Frame<'_>, area: Rect, model: &Model, palette: &Palette) {
    let name = model
        .events_cell
        .as_deref()
        .and_then(|id| {
            model
                .snapshot
                .as_ref()?
                .cells
                .iter()
                .find(|c| c.view.id == id)
                .map(|c| c.view.name.clone())
        })
        .unwrap_or_default();
    let block = Block::default()
        .borders(Borders::TOP)
        .title(format!(" events · {name} · logs/events.jsonl "));
    let inner = block.inner(area);
    let shown = inner.height as usize;
    let start = model.events.len().saturating_sub(shown);
    let lines: Vec<Line<'_>> = model.events[start..]
        .iter()
        .map(|e| {
            let time =
                clock::parse(&e.time).map_or(e.time.clone(), |t| t.format("%H:%M:%S").to_string());
            let tone = match e.level {
                events::Level::Info => Tone::Plain,
                events::Level::Warn => Tone::Warn,
                events::Level::Error => Tone::Bad,
            };
            Line::from(vec![
                Span::raw(format!("{time} ")),
                Span::styled(format!("{:<5}", e.level.as_str()), palette.tone(tone)),
                Span::raw(format!(" {} {}", e.kind, e.message)),
            ])
        })
        .collect();
    frame.render_widget(block, area);
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_footer(frame: &mut Frame<'_>, area: Rect, model: &Model, palette: &Palette) {
    let line = if model.mode == Mode::Filter {
        Line::from(vec![
            Span::styled(" filter: ", palette.bold()),
            Span::raw(format!("{}█", model.filter)),
            Span::raw("  text, or a health (dead, late, ...); Enter keeps, Esc clears"),
        ])
    } else if let Some((text, level)) = &model.message {
        let tone = if *level == Level::Error {
            Tone::Bad
        } else {
            Tone::Plain
        };
        Line::from(Span::styled(format!(" {text}"), palette.tone(tone)))
    } else {
        let mut spans = vec![Span::raw(
            " ↑↓ move  ⏎ expand  / filter  p pause  r revive  s stop  ? help  q quit",
        )];
        if !model.filter.is_empty() {
            spans.push(Span::styled(
                format!("  [filter: {}]", model.filter),
                palette.bold(),
            ));
        }
        Line::from(spans)
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// A rectangle of `width` × `height` in the middle of `area` (shrunk to fit).
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// The help screen's lines (also the source of the key table in docs/cli.md).
pub const HELP: [(&str, &str); 12] = [
    ("↑ ↓  j k", "move"),
    ("PgUp PgDn", "move a page"),
    ("Home End", "first, last row"),
    ("Enter", "expand or collapse a cell or agent"),
    ("/", "filter by text or health; Enter keeps, Esc clears"),
    ("p", "pause or resume the selected cell"),
    ("r", "revive the selected agent now"),
    ("s", "stop the selected agent"),
    ("?", "this help"),
    ("q", "quit (also Ctrl-C)"),
    ("", ""),
    ("", "p, r, s ask first (y), then run the command's own code"),
];

fn draw_help(frame: &mut Frame<'_>, area: Rect) {
    let lines: Vec<Line<'_>> = HELP
        .iter()
        .map(|(k, what)| Line::from(format!(" {k:<10} {what}")))
        .collect();
    let rect = centered(area, 76, HELP.len() as u16 + 2);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" pas top: keys (any key closes) "),
        ),
        rect,
    );
}

fn draw_confirm(frame: &mut Frame<'_>, area: Rect, action: &model::Action) {
    let lines = vec![
        Line::from(action.prompt()),
        Line::from(""),
        Line::from(format!("same as: {}", action.command())),
        Line::from(""),
        Line::from("y: yes    any other key: no"),
    ];
    let rect = centered(area, 64, 9);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::default().borders(Borders::ALL).title(" confirm ")),
        rect,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::model::tests::{fleet, now};
    use crate::tui::model::Input;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    /// The screen as text, one line per row, trailing spaces cut.
    fn render(model: &mut Model, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal
            .draw(|f| draw(f, model, &Palette::plain(), now()))
            .unwrap();
        let buffer = terminal.backend().buffer();
        let mut out = String::new();
        for y in 0..height {
            let mut line = String::new();
            for x in 0..width {
                line.push_str(buffer[(x, y)].symbol());
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Compares with `src/tui/screens/NAME.txt`; `UPDATE_SCREENS=1` writes it instead.
    fn assert_screen(name: &str, screen: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/tui/screens")
            .join(format!("{name}.txt"));
        if std::env::var_os("UPDATE_SCREENS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, screen).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with UPDATE_SCREENS=1 to create it",
                path.display()
            )
        });
        assert!(
            expected == screen,
            "screen {name} differs from {}:\n--- expected\n{expected}--- got\n{screen}(UPDATE_SCREENS=1 rewrites it)",
            path.display()
        );
    }

    fn model() -> Model {
        let mut m = Model::new("/var/missions");
        m.set_snapshot(fleet(now()));
        let cell = m.snapshot.as_ref().unwrap().cells[0].view.id.clone();
        let events = vec![
            ("info", "agent.started", "agent lead started"),
            ("warn", "agent.late", "agent writer_2 is late"),
            ("error", "agent.dead", "agent writer_2 is dead"),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (level, kind, message))| {
            serde_json::from_value(serde_json::json!({
                "seq": i + 1, "time": format!("2026-11-23T09:59:{:02}Z", 10 * i),
                "level": level, "kind": kind, "message": message,
            }))
            .unwrap()
        })
        .collect();
        m.add_events(&cell, events, true);
        m
    }

    #[test]
    fn the_tree_at_80x24() {
        let mut m = model();
        assert_screen("tree-80x24", &render(&mut m, 80, 24));
    }

    #[test]
    fn collapsed_cells_count_their_agents_by_health() {
        let mut m = model();
        // Close the first cell, then the second (the row under the first).
        m.key(Input::Enter);
        m.key(Input::Down);
        m.key(Input::Enter);
        let screen = render(&mut m, 80, 24);
        assert!(
            screen.contains("▸ Audit 9c8d7e6f paused    1 late 1 unknown ·"),
            "{screen}"
        );
        assert_screen("collapsed-80x24", &screen);
    }

    #[test]
    fn an_agent_shows_its_bars() {
        let mut m = model();
        for _ in 0..3 {
            m.key(Input::Down);
        }
        assert_screen("agent-bars-100x30", &render(&mut m, 100, 30));
    }

    #[test]
    fn the_filter_keeps_matching_agents() {
        let mut m = model();
        for c in "/dead".chars() {
            m.key(Input::Char(c));
        }
        assert_screen("filter-dead-80x24", &render(&mut m, 80, 24));
    }

    #[test]
    fn help_and_confirmation_dialogs() {
        let mut m = model();
        m.key(Input::Char('?'));
        assert_screen("help-80x24", &render(&mut m, 80, 24));
        m.key(Input::Esc);
        m.key(Input::Char('p'));
        assert_screen("confirm-pause-80x24", &render(&mut m, 80, 24));
    }

    #[test]
    fn tiny_and_huge_terminals_do_not_panic() {
        let mut m = model();
        for (w, h) in [(1, 1), (20, 5), (80, 8), (300, 100)] {
            render(&mut m, w, h);
        }
    }

    #[test]
    fn ten_thousand_agents_scroll_to_the_end_and_filter() {
        let mut s = fleet(now());
        let template = s.cells[0].view.agents[0].clone();
        s.cells[0].view.agents = (0..10_000)
            .map(|i| AgentView {
                id: format!("agent_{i:05}"),
                ..template.clone()
            })
            .collect();
        let mut m = Model::new("/r");
        m.set_snapshot(s);
        m.key(Input::End);
        render(&mut m, 120, 40);
        for c in "/agent_0999".chars() {
            m.key(Input::Char(c));
        }
        render(&mut m, 120, 40);
        // Speed is the benchmark's business (no timing assertions in tests).
        assert_eq!(m.rows.len(), 1 + 10);
    }

    #[test]
    fn bars_fill_and_mark_thresholds() {
        assert_eq!(bar(0.0, 4, &[]), "▕░░░░▏");
        assert_eq!(bar(0.5, 4, &[0.75]), "▕██░│▏");
        assert_eq!(bar(2.0, 4, &[0.5]), "▕████▏");
    }

    #[test]
    fn colour_follows_the_palette() {
        let mut m = model();
        let palette = Palette {
            color: true,
            health: |h| {
                if h == Health::Dead {
                    Tone::Bad
                } else {
                    Tone::Good
                }
            },
            cell: |_| Tone::Plain,
        };
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        terminal.draw(|f| draw(f, &mut m, &palette, now())).unwrap();
        let buffer = terminal.backend().buffer().clone();
        let row_of = |needle: &str| {
            (0..24u16)
                .find(|y| {
                    let line: String = (0..80u16).map(|x| buffer[(x, *y)].symbol()).collect();
                    line.contains(needle)
                })
                .unwrap()
        };
        let dead = row_of("writer_2");
        let health_x = (0..80u16)
            .find(|x| buffer[(*x, dead)].symbol() == "●")
            .unwrap();
        assert_eq!(buffer[(health_x, dead)].fg, Color::Red);
        let mut plain = Terminal::new(TestBackend::new(80, 24)).unwrap();
        plain
            .draw(|f| draw(f, &mut m, &Palette::plain(), now()))
            .unwrap();
        assert!(plain
            .backend()
            .buffer()
            .content
            .iter()
            .all(|c| c.fg == Color::Reset));
    }
}
