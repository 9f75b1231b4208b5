-- '*' is how the analysis options say "every channel" (emg_core AnalysisOptions.channels): a
-- settings row for a channel literally named '*' would be read as the patient-wide row. Such a row
-- is refused; channel NULL is the patient-wide one.
create or replace function emgd.validate_patient_emg_settings_channel() returns trigger
    language plpgsql
    security definer
    set search_path = ''
as $$
begin
    if new.channel = '*' then
        perform emgd.reject('patient_emg_settings',
            'channel ''*'' is reserved; leave channel NULL for every channel of the patient');
    end if;
    return new;
end
$$;

create trigger patient_emg_settings_validate_channel
    before insert or update of channel on public.patient_emg_settings
    for each row execute function emgd.validate_patient_emg_settings_channel();

revoke all on function emgd.validate_patient_emg_settings_channel()
    from public, anon, authenticated;
